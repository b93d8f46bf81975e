import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { hypervisorFlag, readMachineTuning, selectedChoice, tuningLine } from './machine.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A directory tree standing in for `/`, with the given files (relative paths) written into it. */
function fakeRoot(files: Record<string, string | Buffer>): string {
  const root = mkdtempSync(path.join(os.tmpdir(), 'cir-machine-'));
  dirs.push(root);
  for (const [rel, body] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
    writeFileSync(path.join(root, rel), body);
  }
  return root;
}

const HP = 'sys/module/haltpoll/parameters';
// The layout a KVM guest with the haltpoll cpuidle driver and governor shows (values as the kernel writes them).
const KVM_GUEST = {
  'proc/cpuinfo':
    'processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\n' +
    'flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep hypervisor lahf_lm abm\n\n' +
    'processor\t: 1\nflags\t\t: fpu vme hypervisor\n',
  'sys/devices/system/cpu/cpuidle/current_driver': 'haltpoll\n',
  'sys/devices/system/cpu/cpuidle/current_governor_ro': 'haltpoll\n',
  'sys/devices/system/cpu/cpuidle/current_governor': 'menu\n',
  [`${HP}/guest_halt_poll_ns`]: '200000\n',
  [`${HP}/guest_halt_poll_grow_start`]: '50000\n',
  [`${HP}/guest_halt_poll_allow_shrink`]: 'Y\n',
  'sys/kernel/mm/transparent_hugepage/enabled': 'always [madvise] never\n',
};

describe('readMachineTuning', () => {
  it('reads a KVM guest with halt-polling', () => {
    const t = readMachineTuning(fakeRoot(KVM_GUEST));
    expect(t).toEqual({
      hypervisor: true,
      cpuidleDriver: 'haltpoll',
      cpuidleGovernor: 'haltpoll',
      haltPoll: { maxNs: 200_000, growStartNs: 50_000, allowShrink: true },
      cpufreqGovernor: null,
      transparentHugePages: 'madvise',
    });
    expect(tuningLine(t)).toBe(
      'Kernel: VM guest yes · cpuidle haltpoll/haltpoll · halt-poll max 200000 ns, grow start 50000 ns, shrink yes · cpufreq – · THP madvise',
    );
  });

  it('ignores the halt-poll parameters when another governor idles the CPUs (every KVM-guest kernel has the files)', () => {
    const t = readMachineTuning(
      fakeRoot({
        'proc/cpuinfo': 'processor\t: 0\nflags\t\t: fpu vme de pse tsc msr\n',
        'sys/devices/system/cpu/cpuidle/current_driver': 'intel_idle\n',
        'sys/devices/system/cpu/cpuidle/current_governor': 'menu\n',
        [`${HP}/guest_halt_poll_ns`]: '200000\n',
        [`${HP}/guest_halt_poll_grow_start`]: '50000\n',
        [`${HP}/guest_halt_poll_allow_shrink`]: 'Y\n',
        'sys/devices/system/cpu/cpu0/cpufreq/scaling_governor': 'performance\n',
        'sys/kernel/mm/transparent_hugepage/enabled': '[always] madvise never\n',
      }),
    );
    expect(t).toEqual({
      hypervisor: false,
      cpuidleDriver: 'intel_idle',
      cpuidleGovernor: 'menu',
      haltPoll: null,
      cpufreqGovernor: 'performance',
      transparentHugePages: 'always',
    });
    expect(tuningLine(t)).toContain('· no halt-polling ·');
  });

  it('gives null for everything on a tree without these files, and says so in the summary line', () => {
    const t = readMachineTuning(fakeRoot({}));
    expect(Object.values(t).every((v) => v === null)).toBe(true);
    expect(tuningLine(t)).toBe('Kernel: VM guest – · cpuidle –/– · halt-poll – · cpufreq – · THP –');
  });

  it('refuses odd values: binary, spaces, overlong tokens, a THP mode it does not know, negative or fractional counts', () => {
    const root = fakeRoot({
      ...KVM_GUEST,
      'proc/cpuinfo': 'processor\t: 0\nmodel name\t: x\n',
      'sys/devices/system/cpu/cpuidle/current_driver': Buffer.from([0x68, 0x00, 0xff, 0x0a]),
      'sys/devices/system/cpu/cpuidle/current_governor_ro': 'haltpoll\n',
      [`${HP}/guest_halt_poll_ns`]: '-5\n',
      [`${HP}/guest_halt_poll_grow_start`]: '',
      [`${HP}/guest_halt_poll_allow_shrink`]: 'yes\n',
      'sys/devices/system/cpu/cpu0/cpufreq/scaling_governor': `${'a'.repeat(65)}\n`,
      'sys/kernel/mm/transparent_hugepage/enabled': 'always madvise [sometimes]\n',
    });
    expect(readMachineTuning(root)).toEqual({
      hypervisor: null,
      cpuidleDriver: null,
      cpuidleGovernor: 'haltpoll',
      haltPoll: { maxNs: null, growStartNs: null, allowShrink: null },
      cpufreqGovernor: null,
      transparentHugePages: null,
    });
    for (const bad of ['1.5\n', '1e9\n', '9999999999999999\n', '0x10\n', ' 5\n', '5\n\n']) {
      writeFileSync(path.join(root, HP, 'guest_halt_poll_ns'), bad);
      expect(readMachineTuning(root).haltPoll?.maxNs, JSON.stringify(bad)).toBeNull();
    }
    writeFileSync(path.join(root, 'sys/devices/system/cpu/cpuidle/current_governor_ro'), 'two words\n');
    expect(readMachineTuning(root).cpuidleGovernor).toBeNull();
  });

  it('reads only regular files: a directory or a FIFO in place of a file gives null, without waiting for a writer', () => {
    const root = fakeRoot(KVM_GUEST);
    const driver = path.join(root, 'sys/devices/system/cpu/cpuidle/current_driver');
    rmSync(driver);
    mkdirSync(driver);
    expect(readMachineTuning(root).cpuidleDriver).toBeNull();
    // A FIFO with no writer: a blocking open would never return (and a synchronous call cannot be timed out).
    const thp = path.join(root, 'sys/kernel/mm/transparent_hugepage/enabled');
    rmSync(thp);
    execFileSync('mkfifo', [thp]);
    expect(readMachineTuning(root).transparentHugePages).toBeNull();
  });

  it('refuses a sysfs file longer than the read limit rather than parse its first part', () => {
    // The first 64 KiB alone would parse as a valid choice.
    const long = `always [madvise] ${'never '.repeat(12_000)}never\n`;
    expect(selectedChoice(long.slice(0, 64 * 1024).replace(/ \S*$/, ''))).toBe('madvise');
    expect(readMachineTuning(fakeRoot({ 'sys/kernel/mm/transparent_hugepage/enabled': long })).transparentHugePages).toBeNull();
  });

  it('reads a cpuinfo larger than the read limit as far as its first flags line, and not beyond', () => {
    const big = KVM_GUEST['proc/cpuinfo'] + 'x'.repeat(200 * 1024);
    expect(readMachineTuning(fakeRoot({ 'proc/cpuinfo': big })).hypervisor).toBe(true);
    // A flags line beyond the first 64 KiB is not read: null, not a guess.
    const late = `processor\t: 0\n${'model name\t: x\n'.repeat(5000)}flags\t\t: hypervisor\n`;
    expect(readMachineTuning(fakeRoot({ 'proc/cpuinfo': late })).hypervisor).toBeNull();
    // A flags line cut off by the limit is incomplete: null, even though `hypervisor` may lie past the cut.
    const cut = `processor\t: 0\n${'m'.repeat(64 * 1024 - 40)}\nflags\t\t: fpu ${'vme '.repeat(100)}hypervisor\n`;
    expect(readMachineTuning(fakeRoot({ 'proc/cpuinfo': cut })).hypervisor).toBeNull();
  });

  it.runIf(process.platform === 'linux')('on this machine, reads what the kernel files say', () => {
    const live = (p: string): string | null => (existsSync(p) ? readFileSync(p, 'latin1').trim() : null);
    const t = readMachineTuning();
    expect(t.cpuidleDriver).toBe(live('/sys/devices/system/cpu/cpuidle/current_driver'));
    expect(t.cpufreqGovernor).toBe(live('/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor'));
    expect(t.transparentHugePages).toBe(live('/sys/kernel/mm/transparent_hugepage/enabled')?.match(/\[(\w+)\]/)?.[1] ?? null);
    if (t.haltPoll) expect(t.haltPoll.maxNs).toBe(Number(live('/sys/module/haltpoll/parameters/guest_halt_poll_ns')));
  });
});

describe('hypervisorFlag', () => {
  it('wants the whole word on the first flags line, not a part of a flag or the word elsewhere', () => {
    expect(hypervisorFlag('flags\t\t: fpu hypervisor\n')).toBe(true);
    expect(hypervisorFlag('flags\t\t: fpu xhypervisor hypervisor_lite\n')).toBe(false);
    expect(hypervisorFlag('model name\t: hypervisor edition\nflags\t\t: fpu vme\n')).toBe(false);
    expect(hypervisorFlag('flags\t\t: fpu vme\nflags\t\t: hypervisor\n')).toBe(false);
    expect(hypervisorFlag('model name\t: hypervisor\n')).toBeNull();
    // `flags` then a line break is not a flags line; the next line's words are not its flags.
    expect(hypervisorFlag('flags\n: hypervisor\n')).toBeNull();
  });
});

const word = fc.stringMatching(/^[a-z0-9_]{1,12}$/);

describe('the parsers on arbitrary input', () => {
  it('selectedChoice picks the one bracketed word of a kernel choice line, and refuses lines with none or several', () => {
    fc.assert(
      fc.property(fc.array(word, { minLength: 1, maxLength: 6 }), fc.array(fc.nat(), { maxLength: 3 }), fc.boolean(), (words, marks, newline) => {
        const bracketed = new Set(marks.map((m) => m % words.length));
        const line = words.map((w, i) => (bracketed.has(i) ? `[${w}]` : w)).join(' ') + (newline ? '\n' : '');
        const expected = bracketed.size === 1 ? words[[...bracketed][0]!]! : null;
        expect(selectedChoice(line)).toBe(expected);
      }),
    );
  });

  it('selectedChoice never throws and returns null or a token that was bracketed in the input', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 80 }), (s) => {
        const v = selectedChoice(s);
        if (v !== null) expect(s).toContain(`[${v}]`);
      }),
    );
  });

  it('hypervisorFlag answers exactly whether the first flags line holds the word', () => {
    fc.assert(
      fc.property(fc.array(word, { maxLength: 8 }), fc.boolean(), fc.array(word, { maxLength: 4 }), (flags, withIt, before) => {
        const list = withIt ? [...flags, 'hypervisor'] : flags.filter((f) => f !== 'hypervisor');
        const text = `${before.map((b) => `${b}\t: x\n`).join('')}flags\t\t: ${list.join(' ')}\nflags\t\t: hypervisor\n`;
        // A `before` line named `flags` would be the first flags line itself.
        fc.pre(!before.includes('flags'));
        expect(hypervisorFlag(text)).toBe(withIt);
      }),
    );
  });

  it('readMachineTuning gives a well-formed result for any bytes in any of its files', () => {
    const root = fakeRoot(KVM_GUEST);
    const files = Object.keys(KVM_GUEST) as (keyof typeof KVM_GUEST)[];
    fc.assert(
      fc.property(fc.constantFrom(...files), fc.uint8Array({ maxLength: 300 }), (rel, bytes) => {
        writeFileSync(path.join(root, rel), bytes);
        const t = readMachineTuning(root);
        for (const v of [t.cpuidleDriver, t.cpuidleGovernor, t.cpufreqGovernor]) {
          if (v !== null) expect(v).toMatch(/^[A-Za-z0-9_.:+-]{1,64}$/);
        }
        expect([null, 'always', 'madvise', 'never']).toContain(t.transparentHugePages);
        expect(t.haltPoll === null).toBe(t.cpuidleGovernor !== 'haltpoll');
        for (const n of [t.haltPoll?.maxNs, t.haltPoll?.growStartNs]) {
          if (n !== null && n !== undefined) expect(Number.isSafeInteger(n) && n >= 0).toBe(true);
        }
        expect([true, false, null]).toContain(t.hypervisor);
        expect([true, false, null, undefined]).toContain(t.haltPoll?.allowShrink);
        writeFileSync(path.join(root, rel), KVM_GUEST[rel]);
      }),
      { numRuns: 200 },
    );
  });
});
