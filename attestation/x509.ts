/**
 * Internal entry point to @peculiar/x509: installs the Reflect shim first and binds the
 * library to node's WebCrypto. Every attestation module imports x509 from here.
 */
import './reflect-shim.js';
import * as x509 from '@peculiar/x509';
import { webcrypto } from 'node:crypto';

x509.cryptoProvider.set(webcrypto as unknown as ReturnType<typeof x509.cryptoProvider.get>);

export { x509 };
