/**
 * Turns onnxruntime's telemetry off for this process (see common/ort.ts). Not an option:
 * cir never lets onnxruntime collect or send telemetry, whatever the environment says.
 * Imported for its side effect only, before onnxruntime-node loads.
 */
process.env['ORT_DISABLE_TELEMETRY'] = '1';
