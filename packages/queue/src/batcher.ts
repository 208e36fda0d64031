/**
 * Gathers calls that arrive while earlier ones are being handled, and hands them over as one
 * batch: under load one database round trip serves many callers, while a lone call still goes
 * through at once (there is no timer to wait for). The API gathers job submissions with it, a
 * worker process the batches of all the partitions it consumes.
 */
export class Batcher<In, Out> {
  private waiting: Array<{ item: In; resolve: (out: Out) => void; reject: (error: unknown) => void }> = [];
  private inFlight = 0;

  constructor(
    private readonly handle: (items: In[]) => Promise<Array<Out | Error>>,
    private readonly options: { maxBatch: number; maxInFlight: number },
  ) {}

  submit(item: In): Promise<Out> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ item, resolve, reject });
      this.flush();
    });
  }

  /**
   * Calls the handler at once; one that throws before returning a promise fails its batch like
   * one that rejects: a batch in flight must always end, or those after it would wait for ever.
   */
  private start(items: In[]): Promise<Array<Out | Error>> {
    try {
      return this.handle(items);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  private flush(): void {
    while (this.waiting.length > 0 && this.inFlight < this.options.maxInFlight) {
      const batch = this.waiting.splice(0, this.options.maxBatch);
      this.inFlight++;
      this.start(batch.map((b) => b.item))
        .then(
          (results) => {
            for (const [i, b] of batch.entries()) {
              const result = results[i];
              if (result instanceof Error) b.reject(result);
              else b.resolve(result as Out);
            }
          },
          (error: unknown) => {
            for (const b of batch) b.reject(error);
          },
        )
        .finally(() => {
          this.inFlight--;
          this.flush();
        });
    }
  }
}
