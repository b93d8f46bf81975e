/**
 * The project's one entry point to @peculiar/x509. Its tsyringe dependency needs a Reflect
 * metadata polyfill at import time, so that is loaded first; then the library is bound to
 * node's WebCrypto. Every module imports `x509` from here, never the package directly.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { webcrypto } from 'node:crypto';

x509.cryptoProvider.set(webcrypto as unknown as ReturnType<typeof x509.cryptoProvider.get>);

export { x509 };
