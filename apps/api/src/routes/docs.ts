import type { OpenAPIHono } from '@hono/zod-openapi';
import { html, raw } from 'hono/html';
import type { AppEnv } from '../context.ts';

export const openApiInfo = {
  openapi: '3.1.0',
  info: {
    title: 'Charge Sales API',
    version: '1.0.0',
    description: 'Sellers hold a credit balance, ask for credit, and sell phone charges paid from it.',
    // The project grants no license (no LICENSE file, none in package.json): all rights reserved.
    license: { name: 'Proprietary', identifier: 'LicenseRef-Proprietary' },
  },
  // Relative: the API is wherever this document was fetched from (an SDK is given its base URL).
  servers: [{ url: '/', description: 'The server that serves this document' }],
  tags: [
    { name: 'Sellers', description: 'Sellers, their balances, ledgers and reconciliation' },
    { name: 'Credit requests', description: 'A seller asks for credit; an operator approves or rejects it' },
    { name: 'Charge sales', description: 'Selling a phone charge, paid from the seller balance' },
    { name: 'Jobs', description: 'Sales and approvals run as jobs: poll them, or follow their events' },
    { name: 'Ledger', description: 'Every movement of credit, append-only' },
    { name: 'Phone numbers', description: 'Charged phone numbers with their totals' },
  ],
};

type Schema = {
  $ref?: string;
  type?: string | string[];
  properties?: Record<string, Schema>;
  items?: Schema;
  enum?: unknown[];
};
type Operation = {
  summary?: string;
  tags?: string[];
  parameters?: Array<{ name: string; in: string; required?: boolean; schema?: Schema; description?: string }>;
  requestBody?: { content?: Record<string, { schema?: Schema }> };
  responses?: Record<string, { description?: string }>;
};

const escapeHtml = (value: unknown) => String(value).replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);

function describeSchema(schema: Schema | undefined, components: Record<string, Schema>, depth = 0): string {
  if (!schema) return '';
  if (schema.$ref) {
    const name = schema.$ref.split('/').at(-1) ?? '';
    return depth > 1
      ? escapeHtml(name)
      : `${escapeHtml(name)} ${describeSchema(components[name], components, depth + 1)}`;
  }
  if (schema.properties) {
    const fields = Object.entries(schema.properties).map(
      ([key, value]) => `<li><code>${escapeHtml(key)}</code> ${describeSchema(value, components, depth + 1)}</li>`,
    );
    return `<ul>${fields.join('')}</ul>`;
  }
  if (schema.enum) return `<em>${schema.enum.map(escapeHtml).join(' | ')}</em>`;
  if (schema.items) return `array of ${describeSchema(schema.items, components, depth + 1)}`;
  return `<em>${escapeHtml(Array.isArray(schema.type) ? schema.type.join(' | ') : (schema.type ?? 'any'))}</em>`;
}

/**
 * A browsable reference rendered on the server from the OpenAPI document itself, so it is
 * always the document's twin and needs no assets from outside (the service may run offline).
 */
export function registerDocsRoutes(app: OpenAPIHono<AppEnv>) {
  app.get('/docs', (c) => {
    const doc = app.getOpenAPI31Document(openApiInfo) as unknown as {
      paths: Record<string, Record<string, Operation>>;
      components?: { schemas?: Record<string, Schema> };
    };
    const components = doc.components?.schemas ?? {};
    const sections = Object.entries(doc.paths).flatMap(([path, methods]) =>
      Object.entries(methods).map(([method, op]) => {
        const params = (op.parameters ?? [])
          .map(
            (p) =>
              `<li><code>${escapeHtml(p.name)}</code> (${escapeHtml(p.in)}${p.required ? ', required' : ''}) ${describeSchema(p.schema, components)}</li>`,
          )
          .join('');
        const body = op.requestBody?.content?.['application/json']?.schema;
        const responses = Object.entries(op.responses ?? {})
          .map(([status, r]) => `<li><b>${escapeHtml(status)}</b> ${escapeHtml(r.description ?? '')}</li>`)
          .join('');
        return `<section><h3><span class="m ${method}">${method.toUpperCase()}</span> <code>${escapeHtml(path)}</code></h3>
          <p>${escapeHtml(op.summary ?? '')}</p>
          ${params ? `<h4>Parameters</h4><ul>${params}</ul>` : ''}
          ${body ? `<h4>Body (JSON)</h4>${describeSchema(body, components)}` : ''}
          <h4>Responses</h4><ul>${responses}</ul></section>`;
      }),
    );
    return c.html(html`<!doctype html>
      <html lang="en">
        <head>
          <meta charset="utf-8" />
          <title>${openApiInfo.info.title}</title>
          <style>
            body { font: 15px/1.5 system-ui, sans-serif; max-width: 960px; margin: 2rem auto; padding: 0 1rem; color: #222; }
            section { border-top: 1px solid #ddd; padding: .5rem 0; }
            h3 { margin: .5rem 0 0; } h4 { margin: .5rem 0 0; font-size: .9rem; }
            .m { display: inline-block; min-width: 4rem; font-size: .8rem; padding: .1rem .4rem; border-radius: 4px; color: #fff; text-align: center; }
            .get { background: #2b6cb0; } .post { background: #2f855a; } .patch { background: #b7791f; }
            code { background: #f4f4f4; padding: 0 .2rem; }
          </style>
        </head>
        <body>
          <h1>${openApiInfo.info.title}</h1>
          <p>${openApiInfo.info.description} Authenticate with <code>Authorization: Bearer &lt;token&gt;</code>.
            The machine-readable document is at <a href="/openapi.json">/openapi.json</a>.</p>
          ${raw(sections.join(''))}
        </body>
      </html>`);
  });
}
