/**
 * The server's one entry point to @peculiar/x509: installs the Reflect metadata shim that
 * its tsyringe dependency needs at import time (shared with attestation/, which owns it;
 * a candidate for common/), then binds the library to node's WebCrypto.
 */
import '../attestation/reflect-shim.js';
import * as x509 from '@peculiar/x509';
import { webcrypto } from 'node:crypto';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

export { x509 };
