import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { SnpEvidenceVerifier } from '../attestation/snp/evaluate.js';
import type { EvidenceVerifier } from './app.js';
import { KmsError } from './codes.js';
import { isProduction, type BrokerConfig } from './config.js';

/**
 * The evidence verifier `startBroker` uses unless one is injected: the attestation
 * package's SEV-SNP verifier (`SnpEvidenceVerifier`), trusting the pinned AMD roots and,
 * only when `attestation.allowSimulated` is on (never in production), the simulated TEE's
 * ARK read from `attestation.simulatedRootFile` (PEM).
 * Throws `ERR_KMS_CONFIG_INVALID` for an unreadable or unusable root file.
 */
export async function createDefaultVerifier(
  config: BrokerConfig,
  opts: { env?: Readonly<Record<string, string | undefined>> } = {},
): Promise<EvidenceVerifier> {
  const { allowSimulated, simulatedRootFile } = config.attestation;
  if (!allowSimulated) return new SnpEvidenceVerifier();
  // SECURITY: loadBrokerConfig refuses this already; checked again where trust is built.
  if (isProduction(opts.env ?? process.env)) {
    throw new KmsError('ERR_KMS_CONFIG_INVALID', { detail: 'attestation.allowSimulated: refused when NODE_ENV=production' });
  }
  if (simulatedRootFile === undefined) {
    throw new KmsError('ERR_KMS_CONFIG_INVALID', { detail: 'attestation.simulatedRootFile: required when allowSimulated is true' });
  }
  let arkDer: Buffer;
  try {
    arkDer = new X509Certificate(await readFile(simulatedRootFile)).raw;
  } catch (cause) {
    throw new KmsError('ERR_KMS_CONFIG_INVALID', { detail: 'attestation.simulatedRootFile: not a readable PEM certificate', cause });
  }
  try {
    return new SnpEvidenceVerifier({ simulatedRoot: { arkDer }, allowSimulated: true });
  } catch (cause) {
    const code = (cause as { code?: unknown }).code;
    throw new KmsError('ERR_KMS_CONFIG_INVALID', { detail: `attestation.simulatedRootFile: ${typeof code === 'string' ? code : 'rejected'}`, cause });
  }
}
