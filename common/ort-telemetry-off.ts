/**
 * Turns onnxruntime's telemetry off for this process (see common/ort.ts). Not an option:
 * cir never lets onnxruntime collect or send telemetry, whatever the environment says.
 * Imported for its side effect only, before onnxruntime-node loads.
 *
 * Only the main thread can do it: a worker's `process.env` is its own copy, which the
 * native library never reads. A worker therefore checks that it inherited the setting from
 * a main thread that set it before starting it, and refuses to load onnxruntime otherwise.
 */
import { isMainThread } from 'node:worker_threads';

if (isMainThread) {
  process.env['ORT_DISABLE_TELEMETRY'] = '1';
} else if (process.env['ORT_DISABLE_TELEMETRY'] !== '1') {
  throw new Error('onnxruntime loaded in a worker thread before the main thread turned its telemetry off (import common/ort.js in the main thread first)');
}
