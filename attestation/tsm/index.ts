export {
  ConfigfsTsmProvider,
  detectConfigfsTsm,
  probeConfigfsTsm,
  nodeTsmFs,
  TSM_REPORT_ROOT,
  TSM_PROVIDER_SEV_GUEST,
  TSM_INBLOB_SIZE,
  TSM_DEFAULT_MAX_RETRIES,
  type ConfigfsTsmOptions,
  type TsmFs,
  type TsmProbe,
} from './configfs.js';
