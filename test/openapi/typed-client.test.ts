import { type SpawnOptions, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, System } from '../support/system.ts';
import { buildOpenApiDocument } from './document.ts';
import { lintOpenApi } from './lint.ts';

/**
 * A client's first hour, against the real system: the document it serves passes Redocly's
 * recommended rules, types generated from it with openapi-typescript compile strictly, and the
 * required scenario runs through openapi-fetch with those types. The document can then never
 * drift from the server without this failing.
 */

const example = join(import.meta.dirname, '..', '..', 'examples', 'typed-client');

interface Run {
  code: number | null;
  output: string;
}

/** Runs a command to its end without blocking the event loop (the system's logs keep flowing). */
function run(command: string, args: string[], options: SpawnOptions = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: example, ...options, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.stderr?.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, output }));
  });
}

type Doc = {
  servers?: Array<{ url: string }>;
  info: { license?: { name: string; identifier?: string } };
  paths: Record<string, Record<string, Operation>>;
  components: { schemas: Record<string, Record<string, unknown>> };
};
type Operation = {
  operationId?: string;
  parameters?: Array<{ name: string; in: string; schema: Record<string, unknown> }>;
  responses: Record<string, { content?: Record<string, { schema: Record<string, unknown> }> }>;
};

describe('a client generated from /openapi.json', () => {
  let system: System;
  let doc: Doc;
  let scratch: string;

  beforeAll(async () => {
    // The example is a project of its own (its TypeScript is the one openapi-typescript supports).
    if (!existsSync(join(example, 'node_modules', '.package-lock.json'))) {
      const install = await run('npm', ['ci', '--no-audit', '--no-fund']);
      expect(install.code, install.output).toBe(0);
    }
    scratch = mkdtempSync(join(tmpdir(), 'cs-openapi-'));
    system = await System.start({ workers: 2 });
    const res = await fetch(`${system.baseUrl}/openapi.json`);
    expect(res.status).toBe(200);
    doc = (await res.json()) as Doc;
  }, 300_000);
  afterAll(async () => {
    await system?.stop();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  const operations = () =>
    Object.entries(doc.paths).flatMap(([path, methods]) =>
      Object.entries(methods).map(([method, op]) => ({ route: `${method.toUpperCase()} ${path}`, op })),
    );

  it('is the document npm run lint:openapi lints, and Redocly recommended finds no error and no warning', () => {
    expect(doc).toEqual(buildOpenApiDocument());
    const file = join(scratch, 'served.json');
    writeFileSync(file, JSON.stringify(doc));
    const lint = lintOpenApi(file);
    expect({ errors: lint.errors, warnings: lint.warnings, status: lint.status }, lint.report).toEqual({
      errors: 0,
      warnings: 0,
      status: 0,
    });
    expect(doc.servers?.length).toBeGreaterThan(0);
    expect(doc.info.license?.name).toBeTruthy();
  });

  it('names every operation, once, and documents its success and its errors in the error shape', () => {
    const ids = operations().map(({ route, op }) => [route, op.operationId]);
    expect(Object.fromEntries(ids)).toEqual({
      'POST /api/sellers': 'createSeller',
      'GET /api/sellers': 'listSellers',
      'GET /api/sellers/{id}': 'getSeller',
      'PATCH /api/sellers/{id}': 'updateSeller',
      'GET /api/sellers/{id}/balance': 'getSellerBalance',
      'GET /api/sellers/{id}/transactions': 'listSellerTransactions',
      'GET /api/sellers/{id}/reconcile': 'reconcileSeller',
      'POST /api/sellers/{id}/api-key': 'rotateSellerApiKey',
      'POST /api/credit-requests': 'createCreditRequest',
      'GET /api/credit-requests': 'listCreditRequests',
      'POST /api/credit-requests/{id}/process': 'processCreditRequest',
      'POST /api/charge-sales': 'createChargeSale',
      'GET /api/jobs/{id}': 'getJob',
      'GET /api/jobs/{id}/events': 'streamJobEvents',
      'GET /api/transactions': 'listTransactions',
      'GET /api/phone-numbers': 'listPhoneNumbers',
      'GET /api/phone-numbers/{number}': 'getPhoneNumber',
      'GET /api/overview': 'getOverview',
      'POST /api/operators': 'createOperator',
      'GET /api/operators': 'listOperators',
      'PATCH /api/operators/{id}': 'updateOperator',
      'POST /api/operators/{id}/token': 'rotateOperatorToken',
      'POST /api/operators/{id}/sessions/revoke': 'revokeOperatorSessions',
      'GET /api/audit': 'listAuditEvents',
      'GET /api/deliveries': 'listDeliveries',
      'GET /api/deliveries/{id}': 'getDelivery',
      'POST /api/deliveries/{id}/resolve': 'resolveDelivery',
      'PUT /api/sellers/{id}/webhook': 'setWebhook',
      'GET /api/sellers/{id}/webhook': 'getWebhook',
      'DELETE /api/sellers/{id}/webhook': 'deleteWebhook',
      'POST /api/sellers/{id}/webhook/secret': 'rotateWebhookSecret',
      'GET /api/sellers/{id}/webhook/deliveries': 'listWebhookDeliveries',
      'POST /api/webhook-deliveries/{id}/retry': 'retryWebhookDelivery',
    });
    for (const { route, op } of operations()) {
      const statuses = Object.keys(op.responses);
      expect(
        statuses.some((s) => s.startsWith('2')),
        route,
      ).toBe(true);
      for (const status of ['401', '429', '500', '503']) expect(statuses, route).toContain(status);
      if (route.startsWith('POST') || route.startsWith('PATCH')) {
        for (const status of ['400', '413', '415']) expect(statuses, route).toContain(status);
      }
      for (const status of statuses.filter((s) => Number(s) >= 400)) {
        expect(op.responses[status]?.content?.['application/json']?.schema, `${route} ${status}`).toEqual({
          $ref: '#/components/schemas/Error',
        });
      }
      // Query integers are integers; limit is 1 to 500.
      for (const param of op.parameters ?? []) {
        if (param.name === 'limit') expect(param.schema).toMatchObject({ type: 'integer', minimum: 1, maximum: 500 });
      }
    }
    // An amount in a request: a JSON integer or a string of digits, as the contract says.
    expect(doc.components.schemas.Amount?.anyOf).toEqual([
      expect.objectContaining({ type: 'integer', minimum: 1, maximum: 1_000_000_000_000 }),
      expect.objectContaining({ type: 'string', pattern: '^[1-9][0-9]*$' }),
    ]);
  });

  it('gives types (openapi-typescript) that compile strictly and run the required scenario (openapi-fetch)', async () => {
    const env = { ...process.env, OPENAPI_URL: `${system.baseUrl}/openapi.json` };
    const generate = await run('npm', ['run', 'generate'], { env });
    expect(generate.code, generate.output).toBe(0);
    expect(existsSync(join(example, 'src', 'generated', 'api.d.ts'))).toBe(true);

    const typecheck = await run('npm', ['run', 'typecheck']);
    expect(typecheck.code, typecheck.output).toBe(0);

    const scenario = await run('npm', ['start'], {
      env: { ...process.env, ADMIN_TOKEN, API_URL: system.baseUrl },
    });
    expect(scenario.code, `${scenario.output}\n${system.recentLogs()}`).toBe(0);
    expect(scenario.output).toContain('North: credit_balance 2500000, is_reconciled true, 505 transactions');
    expect(scenario.output).toContain('South: credit_balance 2500000, is_reconciled true, 505 transactions');
    console.log(scenario.output.trim().split('\n').at(-1));
  }, 240_000);
});
