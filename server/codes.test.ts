import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import pino from 'pino';
import { grpcStatusFor, isPublicCategory } from '../common/errors.js';
import { SERVER_CODES, ServerError, type ServerErrorCode } from './codes.js';
import { INTERNAL_MESSAGE, toGrpcStatus } from './grpc-errors.js';

const README = readFileSync(new URL('./README.md', import.meta.url), 'utf8');
const codes = Object.keys(SERVER_CODES) as ServerErrorCode[];
const silent = pino({ level: 'silent' });

describe('server error codes', () => {
  it('are all ERR_SRV_* with a message', () => {
    for (const c of codes) {
      expect(c).toMatch(/^ERR_SRV_[A-Z0-9_]+$/);
      expect(SERVER_CODES[c].message.length).toBeGreaterThan(0);
    }
  });

  it('are documented in README.md with their category, status and message', () => {
    const rows = new Map(
      [...README.matchAll(/^\| `(ERR_SRV_\w+)` \| ([\w-]+) \| (\w+) \| (.+) \|$/gm)].map((m) => [m[1]!, m.slice(2)]),
    );
    expect([...rows.keys()].sort()).toEqual([...codes].sort());
    for (const c of codes) {
      const [category, status, message] = rows.get(c)!;
      expect(category, c).toBe(SERVER_CODES[c].category);
      expect(grpc.status[status as keyof typeof grpc.status], c).toBe(grpcStatusFor(SERVER_CODES[c].category));
      expect(message, c).toBe(SERVER_CODES[c].message);
    }
  });

  it('map to gRPC statuses, hiding non-public categories', () => {
    for (const c of codes) {
      const e = new ServerError(c, { detail: 'd', cause: new Error('secret cause') });
      const s = toGrpcStatus(e, silent, 'M', 'rid');
      expect(s.code).toBe(grpcStatusFor(e.category));
      if (isPublicCategory(e.category)) {
        expect(s.details).toBe(`${SERVER_CODES[c].message}: d`);
        expect(s.metadata.get('cir-error-code')).toEqual([c]);
      } else {
        expect(s.details).toBe(INTERNAL_MESSAGE);
        expect(s.metadata.get('cir-error-code')).toEqual([]);
      }
      expect(s.details).not.toContain('secret');
    }
    const raw = toGrpcStatus(new TypeError('x is undefined at foo.ts:1'), silent, 'M', 'rid');
    expect(raw).toMatchObject({ code: grpc.status.INTERNAL, details: INTERNAL_MESSAGE });
  });
});
