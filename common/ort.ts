/**
 * onnxruntime-node for cir, with onnxruntime's telemetry off. Every module imports
 * onnxruntime from here, never from 'onnxruntime-node' directly (common/ort.test.ts
 * enforces it; type-only imports are erased and harmless).
 *
 * Since 1.30 (microsoft/onnxruntime#27379) onnxruntime's Linux and macOS builds carry
 * Microsoft's 1DS telemetry SDK, on by default. On the first session it writes a persistent
 * device id and an event store under `~/.cache/Microsoft/DeveloperTools/.onnxruntime/`, and
 * files in $TMPDIR (`.ses`, `mat-debug-<pid>.log`), and queues events for upload that name
 * each model's graph name, producer and opsets, the execution providers, the CPU and OS, and
 * run counts and durations. None of that may leave a confidential VM. Setting
 * `ORT_DISABLE_TELEMETRY=1` before onnxruntime initialises turns all of it off (no uploader,
 * no device id, no store); onnxruntime latches the decision for the life of the process.
 * ES modules evaluate their imports in order, so the side-effect import below has run
 * before onnxruntime-node loads. Worker threads do not: their `process.env` is a copy the
 * native library never sees, so the main thread must have loaded this module before it
 * starts a worker that uses onnxruntime (server/worker-executor.ts does); a worker that
 * finds the setting missing refuses to load onnxruntime (common/ort-telemetry-off.ts).
 */
import './ort-telemetry-off.js';

export * from 'onnxruntime-node';
