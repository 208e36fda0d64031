import { createHttpProvider } from './http-provider.ts';
import type { Provider, ProviderSettings } from './provider.ts';
import { createSimulatorProvider } from './simulator-provider.ts';

export * from './breaker.ts';
export * from './http-provider.ts';
export * from './protocol.ts';
export * from './provider.ts';
export * from './sim-server.ts';
export * from './simulator.ts';
export * from './simulator-provider.ts';

/**
 * The provider the settings name (`PROVIDER`, `PROVIDER_URL`, `PROVIDER_API_KEY`,
 * `PROVIDER_TIMEOUT_MS`). Throws on settings that could only fail at the first sale, so a
 * misconfigured worker stops at start-up instead of leaving every sale `unclear`.
 */
export function createProvider(settings: ProviderSettings): Provider {
  const { timeoutMs } = settings;
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0)
    throw new Error(`The provider's timeout must be a positive number of ms, not ${timeoutMs}`);
  if (settings.provider === 'simulator') return createSimulatorProvider({ timeoutMs });
  if (!settings.url) throw new Error('PROVIDER=http needs PROVIDER_URL, the provider’s base URL');
  if (!URL.canParse(settings.url)) throw new Error(`PROVIDER_URL is not a URL: ${settings.url}`);
  if (!settings.apiKey) throw new Error('PROVIDER=http needs PROVIDER_API_KEY, the key the provider gave us');
  return createHttpProvider({ url: settings.url, apiKey: settings.apiKey, timeoutMs });
}
