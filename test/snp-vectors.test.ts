/**
 * Every real SEV-SNP report in the shared vector set, verified with its own certificate at
 * a time inside that certificate's validity window, through the public attestation API.
 *
 * The expected values below are DATA COPIED from /work/shared/vectors/MANIFEST.md ("Files",
 * "AMD SEV-SNP" table for products and times; "Key facts per evidence" for everything
 * else). They are ground truth we did not compute: do not regenerate them from our parser.
 * The files themselves are copied into test/data/vectors/ (see PROVENANCE.md there).
 */
import { describe, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import {
  verifySnpReport,
  validateSnpClaims,
  parseSnpPolicy,
  isAttestationError,
  type SnpCertificates,
  type SnpClaims,
  type SnpPolicyInput,
} from '../attestation/index.js';
import { x509 } from '../common/x509.js';

const VEC = new URL('./data/vectors/', import.meta.url);
const read = (p: string): Buffer => readFileSync(new URL(p, VEC));
const hex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'hex'));

/** All certificates in a PEM or DER file, DER-encoded, in file order. */
function certsIn(p: string): Uint8Array[] {
  const b = read(p);
  if (b.subarray(0, 11).toString('latin1') === '-----BEGIN ') {
    return x509.PemConverter.decode(b.toString('utf8')).map((d) => new Uint8Array(d));
  }
  return [new Uint8Array(b)];
}

interface Tcb {
  readonly bootloader: number;
  readonly tee: number;
  readonly snp: number;
  readonly microcode: number;
  readonly fmc?: number;
}

interface Vector {
  readonly report: string;
  /** The certificate file MANIFEST names for this report. */
  readonly cert: string;
  readonly signingKey: 'vcek' | 'vlek';
  /** Inside the window MANIFEST gives for this report ("now" column). */
  readonly at: string;
  readonly product: 'Milan' | 'Genoa' | 'Turin';
  readonly version: number;
  readonly guestSvn: number;
  readonly vmpl: number;
  readonly debug: boolean;
  readonly reportedTcb: Tcb;
  readonly firmware: string;
  readonly reportData: string;
  readonly measurement: string;
  readonly chipId: string;
  /**
   * Policy relaxations this (real) evidence needs beyond listing its measurement. Not
   * from MANIFEST: what our default policy says about these facts (VMPL, DEBUG, and a
   * current TCB newer than the committed one), asserted so a change in defaults shows.
   */
  readonly needs?: SnpPolicyInput;
}

const ZERO64 = '0'.repeat(128);

// --- copied from MANIFEST.md; see the header comment -----------------------------------
const VECTORS: Readonly<Record<string, Vector>> = {
  'microsoft milan': {
    report: 'sev-snp/microsoft/milan_attestation_report.bin',
    cert: 'sev-snp/microsoft/milan_vcek.pem',
    signingKey: 'vcek',
    at: '2026-06-01T00:00:00Z',
    product: 'Milan',
    version: 3,
    guestSvn: 2,
    vmpl: 0,
    debug: false,
    reportedTcb: { bootloader: 4, tee: 0, snp: 24, microcode: 219 },
    firmware: '1.55.29',
    reportData: ZERO64,
    measurement: '5feee30d6d7e1a29f403d70a4198237ddfb13051a2d6976439487c609388ed7f98189887920ab2fa0096903a0c23fca1',
    chipId: '4ffb5cb4fd594f3fee6528fc3fb10370bb38abe89dcd5ba2cf0ab6a11df2ca282add516bef45a890a8c9f9732bdca68f9f3f16c42e846030a800295dbeb19ba5',
  },
  'microsoft genoa': {
    report: 'sev-snp/microsoft/genoa_attestation_report.bin',
    cert: 'sev-snp/microsoft/genoa_vcek.pem',
    signingKey: 'vcek',
    at: '2026-06-01T00:00:00Z',
    product: 'Genoa',
    version: 3,
    guestSvn: 2,
    vmpl: 0,
    debug: false,
    reportedTcb: { bootloader: 10, tee: 0, snp: 23, microcode: 84 },
    firmware: '1.55.40',
    reportData: ZERO64,
    measurement: '5feee30d6d7e1a29f403d70a4198237ddfb13051a2d6976439487c609388ed7f98189887920ab2fa0096903a0c23fca1',
    chipId: 'b1e24a27bbc3a4d58090d8b89851dce3b8031544be249b9ac17132bb222b027622347ee4d0fe4f689efdfc47a68cefc686cbb448d01436506ee1e28010cab7c0',
  },
  'microsoft turin': {
    report: 'sev-snp/microsoft/turin_attestation_report.bin',
    cert: 'sev-snp/microsoft/turin_vcek.pem',
    signingKey: 'vcek',
    at: '2026-06-01T00:00:00Z',
    product: 'Turin',
    version: 5,
    guestSvn: 2,
    vmpl: 0,
    debug: false,
    reportedTcb: { fmc: 1, bootloader: 1, tee: 1, snp: 4, microcode: 81 },
    firmware: '1.55.65',
    reportData: ZERO64,
    measurement: '6d6c354511d6f7c6d7504668903dc5bdc066a048b651840d8d03fb85299ebfa142fccf1d1b0baca496841bdf243619d4',
    chipId: `59790fb1c39f35c1${'0'.repeat(112)}`,
  },
  'trustee test-report': {
    report: 'sev-snp/trustee/test-report.bin',
    cert: 'sev-snp/trustee/test-vcek.der',
    signingKey: 'vcek',
    at: '2026-06-01T00:00:00Z',
    product: 'Milan',
    version: 2,
    guestSvn: 4,
    vmpl: 0,
    debug: false,
    reportedTcb: { bootloader: 3, tee: 0, snp: 8, microcode: 115 },
    firmware: '1.52.4',
    reportData: `ec6c52d7533cc2c4f45be7849cf112ab82b2009fe7bd43e71ed08c14400ad7e2${'0'.repeat(64)}`,
    measurement: 'a1f3930413247bb38cfc171579ea3c12d5fe4901f0c792f63fd75d98f1ef827c23500644e0e692e6be917f9050d3d38c',
    chipId: 'c38427a30d4c7af9d96f7a15b97269825a64cb76a2352ffd5d18115d89ad473f8e8c0bcd9a5d9286612bad4aadfb4426205a3b9e4fea82301135a170e477524e',
    // current_tcb microcode (206) is newer than committed/reported (115): provisional.
    needs: { allowProvisionalFirmware: true },
  },
  'trustee e2e genoa': {
    report: 'sev-snp/trustee/e2e-genoa-report.bin',
    cert: 'sev-snp/trustee/e2e-genoa-vcek.der',
    signingKey: 'vcek',
    at: '2026-06-01T00:00:00Z',
    product: 'Genoa',
    version: 3,
    guestSvn: 0,
    vmpl: 0,
    debug: false,
    reportedTcb: { bootloader: 10, tee: 0, snp: 23, microcode: 25 },
    firmware: '1.55.40',
    reportData:
      '7e7320889600c7ac133aea7b896c51f41026002982292a7369559796999c1bf929eef3ff23c46e858f0b1982f9a92b17c51b578d958cde6b0c92978f150cf9b0',
    measurement: '6a6519d757e68c2e939c9dbbbc1828498e8de35d2766dd05f1a2cca5059d0cf4ae62a36d75c837974dd50b315506e73e',
    chipId: '371c55d6d15cb50f16dc31d39a24e300caaabff4431e841111429b73ec45ad67ea6e687ffae7bf84b54a5d0e6d79b3ef6ff0bd8b4cff94c2163af5c5de8718e8',
  },
  'trustee vlek': {
    report: 'sev-snp/trustee/test-vlek-report.bin',
    cert: 'sev-snp/trustee/test-vlek.der',
    signingKey: 'vlek',
    at: '2025-06-01T00:00:00Z',
    product: 'Milan',
    version: 3,
    guestSvn: 0,
    vmpl: 1,
    debug: false,
    reportedTcb: { bootloader: 4, tee: 0, snp: 24, microcode: 217 },
    firmware: '1.55.29',
    reportData:
      '819770b7e6ea6df8dd8fd4dd146b073c0bf4f3ce5b0977ecac486e3a05ed1bd54e2a7ac1f5d1ca02e7d7d5ef9f73b8574fd9359e3a480d741a4478e8a7bc27ca',
    measurement: '8922ebbdd00ec2c541f36a6e7a82a8773a7accb451ed67bc94e740dbe92c93c4e8c9af857f5ceeb5a493df2a570d7bf0',
    chipId: ZERO64,
    needs: { allowProvisionalFirmware: true, vmpl: 1 },
  },
  'virtee milan': {
    report: 'sev-snp/virtee-sev/report_milan.bin',
    cert: 'sev-snp/virtee-sev/vcek_milan.der',
    signingKey: 'vcek',
    at: '2026-06-01T00:00:00Z',
    product: 'Milan',
    version: 2,
    guestSvn: 0,
    vmpl: 0,
    debug: false,
    reportedTcb: { bootloader: 3, tee: 0, snp: 8, microcode: 115 },
    firmware: '1.52.4',
    reportData:
      'd447b55d197491bfe15cf298f9de9986b7a7c4be2468b4f6e2d53b71d7c645810b0f2cdfca0040433be063fc1a8293f0f3f8dae7b79fecb3d1cd82bd6a93ebfd',
    measurement: '7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f',
    chipId: 'd49554ec717f4e5b0fe6b143bcf0405bd7ae304727edf46603f2a76aef6a3abc15d7af38db757039029f0efacfd08e244324884738c72b082e2f87a44d541eb6',
  },
  'azure milan (HCL)': {
    report: 'sev-snp/azure/az_milan_report_from_hcl.bin',
    // A PEM bundle: VCEK, then ASK, then ARK (MANIFEST: "the leaf of tpm/az-snp-vtpm/vcek.pem").
    cert: 'tpm/az-snp-vtpm/vcek.pem',
    signingKey: 'vcek',
    at: '2026-06-01T00:00:00Z',
    product: 'Milan',
    version: 2,
    guestSvn: 5,
    vmpl: 0,
    debug: false,
    reportedTcb: { bootloader: 3, tee: 0, snp: 8, microcode: 115 },
    firmware: '1.52.4',
    reportData: `b3fbad6514c83caeb0380882145e49f794229ef37c421b91fc47ff93556bafac${'0'.repeat(64)}`,
    measurement: '9ac48fcac8a2d88aeeff8d427ad4f2be0e3917c748a18bdf52cc317e7fe20308b459d5ef1a12e0c22944eb386d17c315',
    chipId: '19752a447db501a32ade46428a46e92639bd3515dbb45e2e67bbcb0934ffcf1f3e3c004ccb4a99c9fa7e4ffb09da6b324ac58acedaf679f24ba7db5f838c6cca',
    // current_tcb microcode (210) is newer than committed/reported (115): provisional.
    needs: { allowProvisionalFirmware: true },
  },
  'azure genoa (HCL)': {
    report: 'sev-snp/azure/az_genoa_report_from_hcl.bin',
    cert: 'tpm/az-snp-vtpm/vcek-genoa.pem',
    signingKey: 'vcek',
    at: '2026-06-01T00:00:00Z',
    product: 'Genoa',
    version: 3,
    guestSvn: 65547,
    vmpl: 0,
    debug: false,
    reportedTcb: { bootloader: 10, tee: 0, snp: 23, microcode: 84 },
    firmware: '1.55.40',
    reportData: `b581f12e29a2d7d64e5e0b738d563879a78b51c644d0fa0cce02b48699f6bf5f${'0'.repeat(64)}`,
    measurement: 'f57dc09a507c6ecd82369bffb600f0003792f4d99bc26e985ec0c266fc34faf3706faf814c9e61065768a6ff917c89ae',
    chipId: '0506ffba875e939c2729d20c74eb72b4c5ba6bf7ea1faaa640141f12c6d64782fb487f68ce69dcd021e914cc0d9244327bc121f0242d6470903ad1d4aaea4ad1',
  },
  'teekit gcp': {
    report: 'sev-snp/teekit-gcp/sev-gcp.bin',
    cert: 'sev-snp/teekit-gcp/sev-gcp-vcek.pem',
    signingKey: 'vcek',
    at: '2026-06-01T00:00:00Z',
    product: 'Milan',
    version: 5,
    guestSvn: 0,
    vmpl: 0,
    debug: false,
    reportedTcb: { bootloader: 4, tee: 0, snp: 27, microcode: 222 },
    firmware: '1.55.35',
    reportData: ZERO64,
    measurement: 'b747d55452e0b9e9079770a49e397c5e6d9573581e246da7baac4f28b5cdc5b1b6d19251b8ee600fd16a3708f58406f3',
    chipId: '980cf7b61876cb37fd517cd44ce11c72d43c5408e66ab39138370ec59bc195e063254cb501d87d82f0b8b8dc774bcfe28019447711598f007390e4accc405361',
  },
  'teekit gcp reportdata': {
    report: 'sev-snp/teekit-gcp/sev-gcp-reportdata.bin',
    cert: 'sev-snp/teekit-gcp/sev-gcp-vcek.pem',
    signingKey: 'vcek',
    at: '2026-06-01T00:00:00Z',
    product: 'Milan',
    version: 5,
    guestSvn: 0,
    vmpl: 1,
    debug: false,
    reportedTcb: { bootloader: 4, tee: 0, snp: 27, microcode: 222 },
    firmware: '1.55.35',
    reportData:
      '32fc4f6c1971cbf91566231f8d6153eeb9d093aa94306cb48d39bcc4861a3d395f149876a37bc91332fe493f46294fd135d5b95d363ae96352b8c45f906079f5',
    measurement: 'b747d55452e0b9e9079770a49e397c5e6d9573581e246da7baac4f28b5cdc5b1b6d19251b8ee600fd16a3708f58406f3',
    chipId: '980cf7b61876cb37fd517cd44ce11c72d43c5408e66ab39138370ec59bc195e063254cb501d87d82f0b8b8dc774bcfe28019447711598f007390e4accc405361',
    needs: { vmpl: 1 },
  },
  'teekit gcp x25519-bound': {
    report: 'sev-snp/teekit-gcp/sev-gcp-x25519-bound.bin',
    cert: 'sev-snp/teekit-gcp/sev-gcp-vcek.pem',
    signingKey: 'vcek',
    at: '2026-06-01T00:00:00Z',
    product: 'Milan',
    version: 5,
    guestSvn: 0,
    vmpl: 1,
    debug: false,
    reportedTcb: { bootloader: 4, tee: 0, snp: 27, microcode: 222 },
    firmware: '1.55.35',
    reportData:
      '3a6753fd4b194de53824d7fd5b45e251cc19a32a71dd5ba3e131fe19f2adbe86d658c147479571226e0f294eb7e44abb6c1673f39a5378ac25cd5d6268b91f1a',
    measurement: 'b747d55452e0b9e9079770a49e397c5e6d9573581e246da7baac4f28b5cdc5b1b6d19251b8ee600fd16a3708f58406f3',
    chipId: '980cf7b61876cb37fd517cd44ce11c72d43c5408e66ab39138370ec59bc195e063254cb501d87d82f0b8b8dc774bcfe28019447711598f007390e4accc405361',
    needs: { vmpl: 1 },
  },
  'go-sev-guest (debug)': {
    report: 'sev-snp/go-sev-guest/attestation.bin',
    cert: 'sev-snp/go-sev-guest/vcek.der',
    signingKey: 'vcek',
    at: '2022-09-24T01:00:00Z',
    product: 'Milan',
    version: 2,
    guestSvn: 0,
    vmpl: 0,
    debug: true,
    reportedTcb: { bootloader: 2, tee: 0, snp: 5, microcode: 68 },
    firmware: '1.49.3',
    reportData: `0102030405${'0'.repeat(118)}`,
    measurement: 'b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01',
    chipId: '3ac3fe21e13fb0990eb28a802e3fb6a29483a6b0753590c951bdd3b8e53786184ca39e359669a2b76a1936776b564ea464cdce40c05f63c9b610c5068b006b5d',
    needs: { allowDebug: true },
  },
};
// --- end of data copied from MANIFEST.md -------------------------------------------------

/** Sorts the certificates of a file into the verifier's slots: the non-CA leaf, then ASK, ARK. */
function certificatesFor(v: Vector): SnpCertificates {
  const ders = certsIn(v.cert);
  const [leaf, ...cas] = ders;
  const out: { -readonly [K in keyof SnpCertificates]: SnpCertificates[K] } = { [v.signingKey]: leaf! };
  // Bundles list the intermediate before the root (MANIFEST: "VCEK + ASK + ARK").
  if (cas[0]) out.ask = cas[0];
  if (cas[1]) out.ark = cas[1];
  return out;
}

async function verify(v: Vector, at = new Date(v.at)): Promise<SnpClaims> {
  return verifySnpReport(read(v.report), certificatesFor(v), { now: at, expectedReportData: hex(v.reportData) });
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'no error';
  } catch (e) {
    return isAttestationError(e) ? e.code : 'foreign error';
  }
}

describe('every real SEV-SNP report verifies with its own certificate and matches MANIFEST facts', () => {
  it('covers every report in the shared vector set', () => {
    expect(Object.keys(VECTORS)).toHaveLength(13);
  });

  for (const [name, v] of Object.entries(VECTORS)) {
    it(name, async () => {
      const c = await verify(v);
      expect(c.simulated).toBe(false);
      expect(c.relaxations).toEqual([]);
      expect(c.signingKey).toBe(v.signingKey);
      expect(c.product).toBe(v.product);
      expect(c.reportVersion).toBe(v.version);
      expect(c.guestSvn).toBe(v.guestSvn);
      expect(c.vmpl).toBe(v.vmpl);
      expect(c.policy.debug).toBe(v.debug);
      expect(c.policy.smt).toBe(true); // policy_smt_allowed=true for every report
      expect(c.reportedTcb).toEqual(v.reportedTcb);
      expect(c.firmware.current).toBe(v.firmware);
      expect(c.reportData).toBe(v.reportData);
      expect(c.measurement).toBe(v.measurement);
      expect(c.chipId).toBe(v.chipId);

      // A strict policy naming the measurement accepts it once the documented
      // relaxations (and only those) are granted.
      const policy = parseSnpPolicy({ measurements: [v.measurement], ...v.needs });
      expect(validateSnpClaims(c, policy)).toEqual([]);
    });
  }
});

describe('policy outcomes MANIFEST calls out', () => {
  const vlek = VECTORS['trustee vlek']!;
  const debug = VECTORS['go-sev-guest (debug)']!;

  it('the VLEK report runs provisional firmware and VMPL 1: rejected by default', async () => {
    const c = await verify(vlek);
    const failures = validateSnpClaims(c, parseSnpPolicy({ measurements: [vlek.measurement] }));
    expect(failures.map((f) => f.field)).toEqual(['vmpl', 'committedTcb']);
  });

  it('the VLEK report is accepted with allowProvisionalFirmware and vmpl 1 or anyVmpl', async () => {
    const c = await verify(vlek);
    for (const vmpl of [{ vmpl: 1 }, { anyVmpl: true }]) {
      const policy = parseSnpPolicy({ measurements: [vlek.measurement], allowProvisionalFirmware: true, ...vmpl });
      expect(validateSnpClaims(c, policy)).toEqual([]);
    }
    // Provisional firmware alone is not enough: VMPL 1 still fails.
    const only = parseSnpPolicy({ measurements: [vlek.measurement], allowProvisionalFirmware: true });
    expect(validateSnpClaims(c, only).map((f) => f.field)).toEqual(['vmpl']);
  });

  it('go-sev-guest attestation.bin has DEBUG: rejected by default, accepted with allowDebug', async () => {
    const c = await verify(debug);
    expect(validateSnpClaims(c, parseSnpPolicy({ measurements: [debug.measurement] }))).toEqual([
      { field: 'policy.debug', expected: 'false', observed: 'true' },
    ]);
    expect(validateSnpClaims(c, parseSnpPolicy({ measurements: [debug.measurement], allowDebug: true }))).toEqual([]);
  });
});

describe('synthetic VCEK-shaped certificates (trustee) are not AMD-signed', () => {
  const report = VECTORS['trustee test-report']!;
  for (const file of ['sev-snp/trustee/test-vcek-invalid-legacy.der', 'sev-snp/trustee/test-vcek-invalid-new.der']) {
    it(`${file} is rejected`, async () => {
      const p = verifySnpReport(read(report.report), { vcek: new Uint8Array(read(file)) }, {
        now: new Date(report.at),
        expectedReportData: hex(report.reportData),
      });
      expect(await codeOf(p)).toBe('ERR_ATT_SNP_CHAIN_INVALID');
    });
  }
});
