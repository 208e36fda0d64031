import { deleteCookie, getCookie, setCookie } from 'hono/cookie';
import type { AdminContext } from './context.ts';
import { cookieOptions } from './session.ts';

const FLASH_COOKIE = 'cs_admin_flash';
const kinds = ['success', 'warning', 'error'] as const;

/** What a form did, for the operator. */
export interface Flash {
  kind: (typeof kinds)[number];
  text: string;
}

/** The outcome of a form, carried across the redirect that follows it (post/redirect/get). */
export function setFlash(c: AdminContext, flash: Flash) {
  const value = Buffer.from(JSON.stringify(flash)).toString('base64url');
  setCookie(c, FLASH_COOKIE, value, cookieOptions(c, '/admin', 60));
}

/** The flash of the form just submitted, shown once. */
export function takeFlash(c: AdminContext): Flash | null {
  const value = getCookie(c, FLASH_COOKIE);
  if (!value) return null;
  deleteCookie(c, FLASH_COOKIE, { path: '/admin' });
  try {
    const flash = JSON.parse(Buffer.from(value, 'base64url').toString('utf8')) as Partial<Flash>;
    return typeof flash.text === 'string' && kinds.some((kind) => kind === flash.kind) ? (flash as Flash) : null;
  } catch {
    return null;
  }
}
