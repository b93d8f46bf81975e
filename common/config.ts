/**
 * Config loading shared by every `cir` command: a YAML or JSON file, overlaid with flags,
 * validated once with a zod schema, then frozen. A bad setting becomes a ConfigError that
 * names each offending field and the reason, never the value (it may be a secret).
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import { errorFactory, type CodeTable } from './errors.js';

export type ConfigErrorCode = 'ERR_CFG_INVALID' | 'ERR_CFG_UNREADABLE' | 'ERR_CFG_SYNTAX';

export const CONFIG_CODES: CodeTable<ConfigErrorCode> = {
  ERR_CFG_INVALID: { category: 'config', message: 'invalid configuration' },
  ERR_CFG_UNREADABLE: { category: 'config', message: 'configuration file cannot be read' },
  ERR_CFG_SYNTAX: { category: 'config', message: 'configuration file is not valid YAML or JSON' },
};

export const ConfigError = errorFactory(CONFIG_CODES, 'ConfigError');
export type ConfigError = InstanceType<typeof ConfigError>;

/** Reads a YAML (.yaml/.yml) or JSON file into a plain object. */
export async function readConfigFile(file: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (cause) {
    throw new ConfigError('ERR_CFG_UNREADABLE', { detail: `${file}: ${(cause as NodeJS.ErrnoException).code ?? 'error'}`, cause });
  }
  try {
    const ext = path.extname(file).toLowerCase();
    // YAML is a superset of JSON, but JSON files get JSON's stricter parser.
    return ext === '.json' ? JSON.parse(text) : parseYaml(text, { maxAliasCount: 100 });
  } catch (cause) {
    throw new ConfigError('ERR_CFG_SYNTAX', { detail: file, cause });
  }
}

/** Formats zod issues as "field.path: reason" lines; values are never echoed. */
export function formatIssues(issues: readonly z.core.$ZodIssue[]): string[] {
  return issues.map((i) => {
    const field = i.path.length ? i.path.map(String).join('.') : '(root)';
    let reason = i.message;
    if (i.code === 'unrecognized_keys') reason = `unknown field(s) ${i.keys.join(', ')}`;
    return `${field}: ${reason}`;
  });
}

/** All issues as one public detail string: "a.b: reason; c: reason". */
export function issuesDetail(issues: readonly z.core.$ZodIssue[]): string {
  return formatIssues(issues).join('; ');
}

/** Validates `input` against `schema`; returns a deep-frozen result or throws ConfigError. */
export function parseConfig<S extends z.ZodType>(schema: S, input: unknown, source = 'config'): Readonly<z.output<S>> {
  const r = schema.safeParse(input);
  if (!r.success) {
    const lines = formatIssues(r.error.issues);
    throw new ConfigError('ERR_CFG_INVALID', { detail: `${source}: ${lines.join('; ')}`, details: { issues: lines } });
  }
  return deepFreeze(r.data);
}

export function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o as Record<string, unknown>)) deepFreeze(v);
  }
  return o;
}

/** Merges flag values (undefined = not given) over file values, one level of nesting deep per path. */
export function overlay(base: unknown, flags: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = base && typeof base === 'object' ? structuredClone(base as Record<string, unknown>) : {};
  for (const [dotted, value] of Object.entries(flags)) {
    if (value === undefined) continue;
    const parts = dotted.split('.');
    let cur: Record<string, unknown> = out;
    for (const p of parts.slice(0, -1)) {
      const next = cur[p];
      if (!next || typeof next !== 'object') cur[p] = {};
      cur = cur[p] as Record<string, unknown>;
    }
    cur[parts[parts.length - 1]!] = value;
  }
  return out;
}
