/** zod building blocks shared by the per-TEE policy schemas (snp/policy.ts, tdx/policy.ts). */
import { z } from 'zod';

/** Longest allow-list a policy may hold. */
export const MAX_LIST = 1024;

/** Exactly `bytes` bytes as hex; normalised to lower case. */
export const hexOf = (bytes: number) =>
  z
    .string()
    .regex(new RegExp(`^[0-9a-fA-F]{${bytes * 2}}$`), `must be ${bytes * 2} hex digits`)
    .transform((s) => s.toLowerCase());

/** A non-empty, bounded allow-list of `bytes`-byte hex values. */
export const allowList = (bytes: number) => z.array(hexOf(bytes)).min(1).max(MAX_LIST);
