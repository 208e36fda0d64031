/**
 * What the generated types must allow and refuse, checked by `npm run typecheck` alone: the
 * contract takes an amount as a JSON integer or a string of digits and `limit` as an integer,
 * and answers with amounts as strings. A document that drifts from that fails to compile here.
 */
import type { components, operations } from './generated/api';

type ChargeSale = components['schemas']['ChargeSale'];
type CreditRequestBody = components['schemas']['CreateCreditRequest'];
type ListQuery = NonNullable<operations['listSellerTransactions']['parameters']['query']>;

const seller_id = '0190f5a2-7c3e-7b1a-9d2e-5f4a3b2c1d0e';
const phone_number = '09121234567';

export const saleAsInteger: ChargeSale = { seller_id, phone_number, amount: 5000 };
export const saleAsDigits: ChargeSale = { seller_id, phone_number, amount: '5000' };
export const creditAsInteger: CreditRequestBody = { seller: seller_id, amount: 1_000_000 };
// @ts-expect-error an amount is an integer or a string of digits, never a boolean
export const saleAsBoolean: ChargeSale = { seller_id, phone_number, amount: true };
// @ts-expect-error the body is closed: a misspelt field is refused
export const saleMisspelt: ChargeSale = { seller_id, phone_number, amount: 5000, amuont: 5000 };

export const page: ListQuery = { limit: 10, cursor: 'opaque' };
// @ts-expect-error limit is an integer, not text
export const pageAsText: ListQuery = { limit: '10' };

// Answers carry amounts as strings of digits.
export const balance: components['schemas']['Balance']['credit_balance'] = '2500000';
// @ts-expect-error never as a JSON number
export const balanceAsNumber: components['schemas']['Balance']['credit_balance'] = 2500000;
