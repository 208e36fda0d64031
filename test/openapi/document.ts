/**
 * The OpenAPI document exactly as `GET /openapi.json` serves it, built from `createApp`'s own
 * routes without PostgreSQL, Redis or a listening server: building the app only registers routes
 * (their handlers, which would use the services, never run here). `npm run lint:openapi` writes
 * it with this file and lints it; test/openapi/typed-client.test.ts checks it equals the served one.
 *
 *   node --import tsx test/openapi/document.ts [out.json]   (stdout without a path)
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createApp } from '../../apps/api/src/app.ts';
import type { AppDeps } from '../../apps/api/src/context.ts';
import { openApiInfo } from '../../apps/api/src/routes/docs.ts';

/** What building the app reads at once; any other use of a service would throw here. */
function unusedServices(): AppDeps {
  const unused = (name: string) =>
    new Proxy(
      {},
      {
        get(_, key) {
          throw new Error(`building the OpenAPI document used deps.${name}.${String(key)}`);
        },
      },
    );
  return {
    config: unused('config'),
    db: unused('db'),
    // No partition: the queue dashboard is built over no queue, and so needs no Redis.
    queues: { partitions: 0, queue: () => unused('queues.queue') } as unknown as AppDeps['queues'],
    submitter: unused('submitter'),
    sellerKeys: unused('sellerKeys'),
    jobEvents: unused('jobEvents'),
    authFailures: unused('authFailures'),
    saleRate: unused('saleRate'),
    eventStreams: unused('eventStreams'),
    logger: unused('logger'),
    metrics: { middleware: async (_: unknown, next: () => Promise<void>) => next() },
    webhookSecrets: unused('webhookSecrets'),
    pingRedis: async () => {},
  } as unknown as AppDeps;
}

export function buildOpenApiDocument(): Record<string, unknown> {
  const app = createApp(unusedServices());
  // What `app.doc31('/openapi.json', openApiInfo)` serves, through the same call.
  return JSON.parse(JSON.stringify(app.getOpenAPI31Document(openApiInfo))) as Record<string, unknown>;
}

/** Writes the document as JSON to `file`; returns the file. */
export function writeOpenApiDocument(file: string): string {
  mkdirSync(dirname(resolve(file)), { recursive: true });
  writeFileSync(file, `${JSON.stringify(buildOpenApiDocument(), null, 2)}\n`);
  return file;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const out = process.argv[2];
  if (out) writeOpenApiDocument(out);
  else process.stdout.write(`${JSON.stringify(buildOpenApiDocument(), null, 2)}\n`);
}
