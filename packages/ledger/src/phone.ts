/** Iranian mobile numbers: `09` and nine more digits; `+989…` and `989…` are the same number. */
const mobile = /^(?:\+98|98|0)(9[0-9]{9})$/;

/** Returns the number in its stored form `09xxxxxxxxx`, or null when it is not an Iranian mobile. */
export function normalisePhone(value: string): string | null {
  const match = mobile.exec(value);
  return match ? `0${match[1]}` : null;
}
