import { hash, verify } from '@node-rs/argon2';

/** Shortest password an operator may have. */
export const MIN_PASSWORD_LENGTH = 12;

/**
 * argon2id with the library's defaults (19 MiB, 2 passes: OWASP's first recommendation), as a PHC
 * string that carries its own parameters and salt.
 */
export function hashPassword(password: string): Promise<string> {
  return hash(password);
}

/** A hash made once, so that checking a password of nobody takes as long as checking one of someone. */
const NOBODY = hash('no operator has this password, it only takes time');

export async function verifyPassword(stored: string | null, password: string): Promise<boolean> {
  if (!stored) {
    await verify(await NOBODY, password).catch(() => false);
    return false;
  }
  return verify(stored, password).catch(() => false);
}
