import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['{attestation,kms-broker,server,client,common,cli,bench,test}/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    env: { NODE_ENV: 'test' },
  },
});
