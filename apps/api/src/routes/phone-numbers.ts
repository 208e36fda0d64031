import { phoneNumbers } from '@cs/db';
import { normalisePhone } from '@cs/ledger';
import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import { eq } from 'drizzle-orm';
import type { AppEnv } from '../context.ts';
import { notFound } from '../errors.ts';
import { requireOperator } from '../middleware/auth.ts';
import { parsePhoneNumberPage, readPhoneNumbers } from '../read-model/phone-numbers.ts';
import { bearer, errorResponses, json, listOf, paginationQuery, phoneNumberSchema } from '../schemas.ts';
import { listView, phoneNumberView } from '../services/views.ts';

const listPhoneNumbers = createRoute({
  method: 'get',
  path: '/api/phone-numbers',
  operationId: 'listPhoneNumbers',
  tags: ['Phone numbers'],
  summary: 'Charged phone numbers with their totals (admin), newest first',
  security: bearer,
  request: { query: z.object(paginationQuery) },
  responses: {
    200: json(listOf(phoneNumberSchema).openapi('PhoneNumberList'), 'Phone numbers'),
    ...errorResponses(400, 403),
  },
});

const getPhoneNumber = createRoute({
  method: 'get',
  path: '/api/phone-numbers/{number}',
  operationId: 'getPhoneNumber',
  tags: ['Phone numbers'],
  summary: 'One phone number (admin)',
  security: bearer,
  request: {
    params: z.object({
      number: z.string().openapi({
        param: { name: 'number', in: 'path', description: '09…, +989… or 989…' },
        example: '09121234567',
      }),
    }),
  },
  responses: { 200: json(phoneNumberSchema, 'The phone number'), ...errorResponses(403, 404) },
});

export function registerPhoneNumberRoutes(app: OpenAPIHono<AppEnv>) {
  app.openapi(listPhoneNumbers, async (c) => {
    const page = parsePhoneNumberPage(c.req.valid('query'));
    requireOperator(c.var.caller);
    return c.json(listView(await readPhoneNumbers(c.var.deps.db, page), phoneNumberView), 200);
  });

  app.openapi(getPhoneNumber, async (c) => {
    requireOperator(c.var.caller);
    // The path parameter is decoded once already; decoding again would read `%25` as a lone `%`.
    const number = normalisePhone(c.req.valid('param').number);
    if (!number) throw notFound('Phone number');
    const [row] = await c.var.deps.db.select().from(phoneNumbers).where(eq(phoneNumbers.number, number));
    if (!row) throw notFound('Phone number');
    return c.json(phoneNumberView(row), 200);
  });
}
