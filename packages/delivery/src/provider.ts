/** One top-up to deliver. `reference` is ours (the sale's job id): the same on every attempt. */
export interface TopUp {
  reference: string;
  phoneNumber: string;
  /** Rials. */
  amount: bigint;
}

/** What a send told us. Only `declined` is a certain failure; `unclear` (timeout, 5xx, connection error, malformed answer) never is. */
export type SendAnswer =
  | { kind: 'delivered'; providerReference: string }
  | { kind: 'declined'; reason: string }
  | { kind: 'pending'; providerReference: string | null }
  | { kind: 'unclear'; detail: string };

export type StatusAnswer =
  | { kind: 'delivered'; providerReference: string }
  | { kind: 'failed'; reason: string }
  | { kind: 'pending' }
  /** The provider never received this reference: sending again is safe. */
  | { kind: 'not_found' }
  | { kind: 'unclear'; detail: string };

/**
 * A telecom operator's top-up API. Sending one reference again never delivers twice (the provider
 * is idempotent by reference), which is what lets the delivery stage send again after `unclear`.
 */
export interface Provider {
  /** 'simulator' | 'http' */
  readonly name: string;
  /** Never throws; errors become `unclear`. */
  send(topUp: TopUp): Promise<SendAnswer>;
  /** Never throws; errors become `unclear`. */
  status(reference: string): Promise<StatusAnswer>;
  close(): Promise<void>;
}

export interface ProviderSettings {
  provider: 'simulator' | 'http';
  url?: string;
  apiKey?: string;
  /** How long one call may take; past it the answer is `unclear`, never a failure. */
  timeoutMs: number;
}
