import type { Provider, SendAnswer, StatusAnswer, TopUp } from './provider.ts';
import { Simulator } from './simulator.ts';

export interface SimulatorProviderOptions {
  timeoutMs: number;
  /** The simulator to serve; a new one by default. Tests pass their own to settle and count. */
  simulator?: Simulator;
}

export type SimulatorProvider = Provider & { readonly simulator: Simulator };

/**
 * The in-process provider (`PROVIDER=simulator`). Its simulator lives in this Provider instance,
 * so in this process only. A limitation, by design: a reference is known only to the process that
 * sent it. Another worker process that takes a delivery over and asks about it gets `not_found`,
 * and sends it again, which is safe (`not_found` means "never received") but means a top-up can
 * be "delivered" by two processes' simulators. Where that matters (several workers taking over each
 * other's deliveries), run `npm run provider:sim` and use `PROVIDER=http`: one simulator for all.
 */
export function createSimulatorProvider(options: SimulatorProviderOptions): SimulatorProvider {
  const simulator = options.simulator ?? new Simulator();
  const { timeoutMs } = options;
  // Ends the waits of sends in flight when the provider closes, so a shutdown never waits a timeout.
  const closing = new AbortController();

  return {
    name: 'simulator',
    simulator,
    async send(topUp: TopUp): Promise<SendAnswer> {
      if (closing.signal.aborted) return { kind: 'unclear', detail: 'provider closed' };
      try {
        const deadline = timeout(timeoutMs, closing.signal);
        try {
          const answer = await Promise.race([simulator.send(topUp), deadline.expired]);
          if (answer === 'timeout') return unclearTimeout();
          // A "times out" number: the simulator recorded the top-up and says nothing, so, as over
          // HTTP, the caller waits its whole timeout and learns nothing.
          if (answer.kind === 'no_answer') return await deadline.expired.then(unclearTimeout);
          return answer;
        } finally {
          deadline.cancel();
        }
      } catch (error) {
        return { kind: 'unclear', detail: describe(error) };
      }
    },
    async status(reference: string): Promise<StatusAnswer> {
      if (closing.signal.aborted) return { kind: 'unclear', detail: 'provider closed' };
      try {
        const answer = simulator.status(reference);
        return answer.kind === 'pending' ? { kind: 'pending' } : answer;
      } catch (error) {
        return { kind: 'unclear', detail: describe(error) };
      }
    },
    async close() {
      closing.abort();
    },
  };
}

const unclearTimeout = (): SendAnswer => ({ kind: 'unclear', detail: 'timeout' });

/**
 * A timer that resolves 'timeout' after `ms`, or at once when `signal` aborts (the provider
 * closed); `cancel` frees it when the answer came first.
 */
function timeout(ms: number, signal: AbortSignal) {
  let timer: NodeJS.Timeout | undefined;
  let onAbort = () => {};
  const expired = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), ms);
    onAbort = () => resolve('timeout');
    signal.addEventListener('abort', onAbort, { once: true });
  });
  return {
    expired,
    cancel() {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
    },
  };
}

const describe = (error: unknown) => (error instanceof Error ? error.message : String(error));
