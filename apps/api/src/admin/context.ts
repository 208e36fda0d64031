import type { Context } from 'hono';
import type { AppEnv } from '../context.ts';

/** A signed-in operator's browser session, as read back from its cookie. */
export interface AdminSession {
  id: string;
  expiresAt: number;
  /** Hidden in every form of the session and checked on every POST. */
  csrfToken: string;
}

/** The API's context, plus how the operator got in: a session (cookie) or none (bearer token). */
export type AdminEnv = {
  Variables: AppEnv['Variables'] & { session: AdminSession | null };
};

export type AdminContext = Context<AdminEnv>;

/** A browser asking for a page, as opposed to an API client. */
export function wantsHtml(c: Context): boolean {
  return (c.req.header('accept') ?? '').includes('text/html');
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
