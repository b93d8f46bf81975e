/** Simulated TEE (public API). The test mint lives in ./testing.js and is not re-exported. */
export {
  SimulatedSnp,
  SIM_FILES,
  SIM_CPUID,
  SIM_DEFAULT_POLICY,
  SIM_PRODUCT_NAME,
  type SimChip,
  type SimProviderOptions,
  type SimulatedSnpOpenOptions,
} from './simulated-snp.js';
