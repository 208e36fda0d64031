/** @jsxImportSource hono/jsx */
import { operators, recordAudit } from '@cs/db';
import { sql } from 'drizzle-orm';
import type { OperatorCaller } from '../../context.ts';
import { identify, isOperator } from '../../middleware/auth.ts';
import { clientAddress } from '../../services/client-address.ts';
import { verifyPassword } from '../../services/passwords.ts';
import { type AdminContext, Form } from '../context.ts';
import {
  CSRF_FIELD,
  endEverySession,
  endSession,
  isLoginTokenValid,
  issueLoginToken,
  readSession,
  safeNext,
  startSession,
} from '../session.ts';
import { Document } from '../views.tsx';

function SignInForm(props: { csrf: string; next: string; error?: string | undefined }) {
  return (
    <Document title="Sign in">
      <main>
        <form class="login" method="post" action="/admin/login">
          <h1>Operator sign-in</h1>
          {props.error && (
            <div class="flash error" role="alert">
              {props.error}
            </div>
          )}
          <label for="email">Email</label>
          <input id="email" name="email" type="email" autocomplete="username" autofocus />
          <label for="password">Password</label>
          <input id="password" name="password" type="password" autocomplete="current-password" />
          <p class="muted">Or, for an operator without a password (and the bootstrap ADMIN_TOKEN):</p>
          <label for="token">Token</label>
          <input id="token" name="token" type="password" autocomplete="off" />
          <input type="hidden" name={CSRF_FIELD} value={props.csrf} />
          <input type="hidden" name="next" value={props.next} />
          <button class="primary" type="submit">
            Sign in
          </button>
          <p class="muted">A session ends when you sign out, after 30 minutes without use, and after 8 hours.</p>
        </form>
      </main>
    </Document>
  );
}

async function renderLogin(c: AdminContext, status: 200 | 401 | 403, next: string, error?: string) {
  const csrf = await issueLoginToken(c);
  return c.html(<SignInForm csrf={csrf} next={next} error={error} />, status);
}

/** `GET /admin/login`: the sign-in form, or straight on for a browser already signed in. */
export async function loginPage(c: AdminContext) {
  const next = safeNext(c.req.query('next'));
  if (await readSession(c)) return c.redirect(next, 303);
  return renderLogin(c, 200, next);
}

/**
 * `POST /admin/login`: an operator's email and password, or a token (an operator's, or the
 * bootstrap ADMIN_TOKEN), for a session. A refusal says nothing of which part was wrong, and is
 * written to the audit trail with the address it came from.
 */
export async function signIn(c: AdminContext) {
  const form = await Form.read(c);
  const next = safeNext(form.one('next'));
  if (!(await isLoginTokenValid(c, form))) {
    return renderLogin(c, 403, next, 'The sign-in form had expired. Please sign in again.');
  }
  const token = form.one('token')?.trim();
  const email = form.one('email')?.trim().slice(0, 320);
  const password = form.one('password') ?? '';
  // A token or a password tried counts against the address when it signs no one in.
  const tried = token || password ? 'credentials' : undefined;
  let refusedOperator: string | null = null;
  const caller = await c.var.deps.authFailures
    .guard(c, tried, async () => {
      const attempt = token ? await signInWithToken(c, token) : await signInWithPassword(c, email ?? '', password);
      if ('refused' in attempt) {
        refusedOperator = attempt.operatorId;
        return null;
      }
      return attempt.caller;
    })
    .catch(async (error: unknown) => {
      // Past the limit: the refusal that crossed it is audited like the others, then answered 429.
      await auditFailedSignIn(c, refusedOperator, token ? null : email || null, token ? 'token' : 'password');
      throw error;
    });
  if (!caller) {
    await auditFailedSignIn(c, refusedOperator, token ? null : email || null, token ? 'token' : 'password');
    return renderLogin(c, 401, next, 'Those credentials do not sign anyone in.');
  }
  await startSession(c, caller);
  c.var.logger.info({ operator: caller.operator.name }, 'operator signed in');
  return c.redirect(next, 303);
}

async function auditFailedSignIn(
  c: AdminContext,
  operatorId: string | null,
  email: string | null,
  method: 'token' | 'password',
): Promise<void> {
  await recordAudit(c.var.deps.db, {
    actor: { type: 'operator', id: operatorId, email },
    action: 'session.sign_in_failed',
    targetType: 'operator',
    targetId: operatorId ?? 'unknown',
    ip: clientAddress(c),
    details: { method },
  });
  c.var.logger.warn({ ip: clientAddress(c), method }, 'operator sign-in refused');
}

type Attempt = { caller: OperatorCaller } | { refused: true; operatorId: string | null };

async function signInWithToken(c: AdminContext, token: string): Promise<Attempt> {
  const caller = await identify(c.var.deps, token);
  return caller && isOperator(caller) ? { caller } : { refused: true, operatorId: null };
}

async function signInWithPassword(c: AdminContext, email: string, password: string): Promise<Attempt> {
  const [operator] = email
    ? await c.var.deps.db.select().from(operators).where(sql`lower(${operators.email}) = lower(${email})`).limit(1)
    : [];
  // The hash is checked even for an unknown address, so the time taken does not tell which it was.
  const valid = await verifyPassword(operator?.passwordHash ?? null, password);
  if (!operator || !valid || !operator.isActive) return { refused: true, operatorId: operator?.id ?? null };
  return {
    caller: { role: operator.role, operator: { id: operator.id, email: operator.email, name: operator.email } },
  };
}

/**
 * `POST /admin/sessions/revoke`: ends every session of the signed-in operator (of the bootstrap
 * admin: every bootstrap session), this one included.
 */
export async function signOutEverywhere(c: AdminContext) {
  const caller = c.var.caller;
  if (!isOperator(caller)) return c.redirect('/admin/login', 303);
  await endEverySession(c, caller);
  return c.redirect('/admin/login', 303);
}

/** `POST /admin/logout`: ends the session on the server. */
export async function signOut(c: AdminContext) {
  await endSession(c);
  return c.redirect('/admin/login', 303);
}
