import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import type { OpenAPIHono } from '@hono/zod-openapi';
import { html } from 'hono/html';
import { secureHeaders } from 'hono/secure-headers';
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
    { name: 'Operations', description: 'What operators watch: the last hour at a glance' },
  ],
};

const requireHere = createRequire(import.meta.url);
// The helper alone: the package's main module would load the whole browser bundle into Node.
const swaggerUiDir: string = requireHere('swagger-ui-dist/absolute-path.js')();
const swaggerUiVersion: string = requireHere('swagger-ui-dist/package.json').version;

/** The version is in the path, so the assets can be cached for good and an upgrade still reaches browsers. */
const ASSETS = `/docs/assets/${swaggerUiVersion}`;

/** The only files served from the package, each with its type: a request names a key, never a path. */
const assetTypes: Record<string, string> = {
  'swagger-ui-bundle.js': 'text/javascript; charset=utf-8',
  'swagger-ui.css': 'text/css; charset=utf-8',
  'favicon-32x32.png': 'image/png',
};
const assets = new Map<string, Promise<Uint8Array<ArrayBuffer>>>();
const readAsset = (file: string) => {
  let content = assets.get(file);
  if (!content) {
    content = readFile(join(swaggerUiDir, file));
    // A failed read is not kept: the next request tries again.
    content.catch(() => assets.delete(file));
    assets.set(file, content);
  }
  return content;
};

/**
 * Swagger UI's options. Try-it-out sends requests from the page to this same origin with the
 * token given under "Authorize" (the document's `bearer` scheme); the token stays in the page's
 * memory only, since the machine may be shared. No query may point the page at another document,
 * and no schema is sent to the public validator.
 */
const swaggerUiOptions = {
  url: '/openapi.json',
  dom_id: '#swagger-ui',
  deepLinking: true,
  tryItOutEnabled: true,
  persistAuthorization: false,
  queryConfigEnabled: false,
  validatorUrl: null,
  displayRequestDuration: true,
  layout: 'BaseLayout',
};

/** The initialisation is a file of its own, so the page's CSP allows no inline script. */
const initScript = `'use strict';
window.ui = SwaggerUIBundle(Object.assign(${JSON.stringify(swaggerUiOptions)}, {
  presets: [SwaggerUIBundle.presets.apis],
  plugins: [SwaggerUIBundle.plugins.DownloadUrl],
}));
`;

const page = html`<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8" />
    <meta name="viewport" content="width=device-width, initial-scale=1" />
    <title>${openApiInfo.info.title}</title>
    <link rel="icon" type="image/png" href="${ASSETS}/favicon-32x32.png" />
    <link rel="stylesheet" href="${ASSETS}/swagger-ui.css" />
    <style>
      body { margin: 0; background: #fafafa; }
    </style>
  </head>
  <body>
    <noscript>This reference needs JavaScript. The OpenAPI document itself is at <a href="/openapi.json">/openapi.json</a>.</noscript>
    <div id="swagger-ui"></div>
    <script src="${ASSETS}/swagger-ui-bundle.js"></script>
    <script src="/docs/init.js"></script>
  </body>
</html>`;

/**
 * Swagger UI is a script application: its own script and styles, the inline styles React sets,
 * the data: images of its stylesheet, and requests to this origin only (the document, and
 * try-it-out). Nothing from elsewhere, no inline script, no eval.
 */
const docsHeaders = secureHeaders({
  xFrameOptions: 'DENY',
  referrerPolicy: 'same-origin',
  // HSTS is left to whatever terminates TLS: it binds the whole host, which one path of it should not decide.
  strictTransportSecurity: false,
  contentSecurityPolicy: {
    defaultSrc: ["'none'"],
    scriptSrc: ["'self'"],
    styleSrc: ["'self'", "'unsafe-inline'"],
    imgSrc: ["'self'", 'data:'],
    connectSrc: ["'self'"],
    fontSrc: ["'self'"],
    frameAncestors: ["'none'"],
    baseUri: ["'none'"],
    formAction: ["'self'"],
  },
});

/** `GET /docs`: an interactive reference of `/openapi.json`, served entirely by this API. */
export function registerDocsRoutes(app: OpenAPIHono<AppEnv>) {
  // Hono's `/docs/*` matches `/docs` itself too.
  app.use('/docs/*', docsHeaders);

  app.get('/docs', (c) => c.html(page));
  app.get('/docs/init.js', (c) =>
    c.body(initScript, 200, { 'Content-Type': 'text/javascript; charset=utf-8', 'Cache-Control': 'no-cache' }),
  );
  app.get('/docs/assets/:version/:file', async (c) => {
    const { version, file } = c.req.param();
    const type = Object.hasOwn(assetTypes, file) ? assetTypes[file] : undefined;
    if (version !== swaggerUiVersion || !type) return c.notFound();
    return c.body(await readAsset(file), 200, {
      'Content-Type': type,
      'Cache-Control': 'public, max-age=31536000, immutable',
    });
  });
}
