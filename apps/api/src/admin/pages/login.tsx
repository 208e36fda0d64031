/** @jsxImportSource hono/jsx */
import { identify } from '../../middleware/auth.ts';
import { type AdminContext, Form } from '../context.ts';
import {
  CSRF_FIELD,
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
          <label for="token">Admin token</label>
          <input id="token" name="token" type="password" autocomplete="current-password" required autofocus />
          <input type="hidden" name={CSRF_FIELD} value={props.csrf} />
          <input type="hidden" name="next" value={props.next} />
          <button class="primary" type="submit">
            Sign in
          </button>
          <p class="muted">The token is the ADMIN_TOKEN the API was started with. The session lasts 8 hours.</p>
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

/** `POST /admin/login`: the admin token for a session cookie. */
export async function signIn(c: AdminContext) {
  const form = await Form.read(c);
  const next = safeNext(form.one('next'));
  if (!(await isLoginTokenValid(c, form))) {
    return renderLogin(c, 403, next, 'The sign-in form had expired. Please enter the token again.');
  }
  const token = form.one('token')?.trim() || undefined;
  const caller = await c.var.deps.authFailures.guard(c, token, () => identify(c.var.deps, token));
  if (caller?.role !== 'admin') {
    c.var.logger.warn('operator sign-in refused: wrong token');
    return renderLogin(c, 401, next, 'That is not the admin token.');
  }
  await startSession(c);
  c.var.logger.info('operator signed in');
  return c.redirect(next, 303);
}

/** `POST /admin/logout`. */
export function signOut(c: AdminContext) {
  endSession(c);
  return c.redirect('/admin/login', 303);
}
