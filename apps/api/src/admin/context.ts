import { z } from '@hono/zod-openapi';
import type { Context } from 'hono';
import type { AppEnv, OperatorCaller } from '../context.ts';
import { ApiError } from '../errors.ts';
import type { PageQuery } from '../read-model/page.ts';
import { paginationQuery } from '../schemas.ts';

/** A signed-in operator's browser session, as its row and cookie say. */
export interface AdminSession {
  /** Hidden in every form of the session and checked on every POST. */
  csrfToken: string;
  /** The SHA-256 of the session's id: its row in operator_sessions. */
  idHash: string;
  caller: OperatorCaller;
}

/** The API's context, plus how the operator got in: a session (cookie) or none (bearer token). */
export type AdminEnv = {
  Bindings: AppEnv['Bindings'];
  Variables: AppEnv['Variables'] & { session: AdminSession | null };
};

export type AdminContext = Context<AdminEnv>;

/** A browser asking for a page, as opposed to an API client. */
export function wantsHtml(c: Context): boolean {
  return (c.req.header('accept') ?? '').includes('text/html');
}

/** The page being shown, to come back to after a form on it. */
export function thisPage(c: Context): string {
  const url = new URL(c.req.url);
  return url.pathname + url.search;
}

const pageQuerySchema = z.object(paginationQuery);

/** `?limit=` and `?cursor=` of a list page, checked exactly as the API checks them. */
export function readPageQuery(c: Context): PageQuery {
  const parsed = pageQuerySchema.safeParse({ limit: c.req.query('limit'), cursor: c.req.query('cursor') });
  if (parsed.success) return parsed.data;
  const fields = Object.fromEntries(parsed.error.issues.map((issue) => [String(issue.path[0]), issue.message]));
  throw new ApiError('validation_error', `Invalid request: ${Object.keys(fields).join(', ')}`, { fields });
}

/** A submitted form; fields read as strings, file uploads ignored. */
export class Form {
  private constructor(private readonly fields: Record<string, unknown>) {}

  static async read(c: Context): Promise<Form> {
    return new Form(await c.req.parseBody({ all: true }));
  }

  /** The field's value; its first when repeated. */
  one(name: string): string | undefined {
    return this.all(name)[0];
  }

  all(name: string): string[] {
    const value = this.fields[name];
    const values = Array.isArray(value) ? value : value === undefined ? [] : [value];
    return values.filter((v): v is string => typeof v === 'string');
  }
}
