/**
 * Creator and session ids reach topic names, registry keys and logs, so they
 * are bounded and drawn from a safe character set.
 */
const ID = /^[A-Za-z0-9._:-]{1,128}$/;

export function isValidId(id: string): boolean {
  return ID.test(id);
}
