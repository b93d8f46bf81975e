import { describe, expect, it } from 'vitest';
import { componentOf, shortUrl, summarizeProfile, type CpuProfile } from './release-profile.js';

const D = 'file:///srv/cir/dist/';
const NM = 'file:///srv/cir/node_modules/';

/**
 * root -> handler (kms-broker/app.js) -> verify (attestation/snp/verify.js) -> sig (node:internal/crypto/sig)
 *      -> (idle)
 *      -> parserOnHeaders (node:_http_server)
 *      -> sign (jose/dist/webapi/sign.js)
 */
function profile(): CpuProfile {
  const f = (functionName: string, url: string) => ({ functionName, url, lineNumber: 0 });
  return {
    startTime: 1_000,
    nodes: [
      { id: 1, callFrame: f('(root)', ''), children: [2, 5, 6, 7] },
      { id: 2, callFrame: f('handler', `${D}kms-broker/app.js`), children: [3] },
      { id: 3, callFrame: f('verify', `${D}attestation/snp/verify.js`), children: [4] },
      { id: 4, callFrame: f('verifyOneShot', 'node:internal/crypto/sig'), children: [] },
      { id: 5, callFrame: f('(idle)', ''), children: [] },
      { id: 6, callFrame: f('parserOnHeaders', 'node:_http_server'), children: [] },
      { id: 7, callFrame: f('sign', `${NM}jose/dist/webapi/sign.js`), children: [] },
    ],
    // sample times: 1100 (4), 1300 (4), 1400 (5), 1500 (6), 1600 (7), 2600 (3)
    samples: [4, 4, 5, 6, 7, 3],
    timeDeltas: [100, 200, 100, 100, 100, 1000],
  };
}

describe('summarizeProfile', () => {
  it('charges native and node-internal samples to the nearest cir or package frame', () => {
    const s = summarizeProfile(profile());
    expect(s.totalMs).toBeCloseTo(1.6);
    expect(s.idleMs).toBeCloseTo(0.1);
    const comp = Object.fromEntries(s.components.map((c) => [c.name, c.ms]));
    expect(comp['evidence verification (attestation/)']).toBeCloseTo(1.3);
    expect(comp['node (_http_server)']).toBeCloseTo(0.1);
    expect(comp['tokens and signatures (tokens, jose)']).toBeCloseTo(0.1);
    expect(s.components[0]!.name).toBe('evidence verification (attestation/)');
    const incl = Object.fromEntries(s.inclusive.map((c) => [c.fn, c.ms]));
    expect(incl['handler kms-broker/app.js:1']).toBeCloseTo(1.3);
    expect(incl['verify attestation/snp/verify.js:1']).toBeCloseTo(1.3);
    expect(s.self[0]).toEqual({ fn: 'verify attestation/snp/verify.js:1', ms: 1 });
  });

  it('counts only samples inside the window', () => {
    const s = summarizeProfile(profile(), 15, { fromUs: 1_250, toUs: 1_550 });
    expect(s.totalMs).toBeCloseTo(0.4);
    expect(s.idleMs).toBeCloseTo(0.1);
    expect(Object.fromEntries(s.components.map((c) => [c.name, c.ms]))).toEqual({
      'evidence verification (attestation/)': 0.2,
      'node (_http_server)': 0.1,
    });
  });

  it('names locations below dist/ and node_modules/ (packages first)', () => {
    expect(shortUrl(`${D}kms-broker/keystore.js`)).toBe('kms-broker/keystore.js');
    expect(shortUrl(`${NM}jose/dist/webapi/sign.js`)).toBe('jose/dist/webapi/sign.js');
    expect(componentOf(`${D}kms-broker/keystore.js`, 'unwrap')).toBe('key store (kms-broker/keystore)');
    expect(componentOf(`${D}kms-broker/jws-es256.js`, 'signCompactEs256')).toBe('tokens and signatures (tokens, jose)');
    expect(componentOf('', '(garbage collector)')).toBe('garbage collector');
    expect(componentOf('node:internal/fs/promises', 'readFile')).toBe('node (fs)');
  });
});
