import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { type Browser, chromium } from 'playwright-core';

/** Debian's Chromium, which the browser tests drive; they skip, saying so, where it is missing. */
export const CHROMIUM = '/usr/bin/chromium';
export const hasChromium = existsSync(CHROMIUM);

/** Where the browser tests leave their screenshots. */
export const artifacts = join(import.meta.dirname, '..', '..', 'test-artifacts');

/** Says once, for a file about to skip, why it skips. */
export function warnIfNoChromium(what: string): void {
  if (!hasChromium) console.warn(`Skipping the ${what} browser test: no Chromium at ${CHROMIUM}`);
}

/** Headless Chromium as every browser test runs it, with the screenshot folder made. */
export function launchChromium(): Promise<Browser> {
  mkdirSync(artifacts, { recursive: true });
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
}
