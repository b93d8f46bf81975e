/**
 * Byte layout of the Intel TDX DCAP quote, versions 4 and 5.
 *
 * Spec: Intel "TDX DCAP Quoting Library API" (rev. 2024), appendix A.3 "Version 4 Quote
 * Format" (tables "Quote Header", "TD Quote Body", "Quote Signature Data", "QE
 * Certification Data", "QE Report Certification Data") and A.4 "Version 5 Quote Format"
 * ("Quote Body Descriptor", TD 1.5 "TD Quote Body"); Intel SGX "ECDSA Quote Library API"
 * table "Report Body" for the 384-byte QE report. All integers are little-endian.
 */

// --- Quote Header (48 bytes) -------------------------------------------------------
export const HEADER_SIZE = 48;
export const HDR_VERSION = 0; // u16
export const HDR_ATT_KEY_TYPE = 2; // u16
export const HDR_TEE_TYPE = 4; // u32
export const HDR_QE_SVN = 8; // u16 (reserved in v4)
export const HDR_PCE_SVN = 10; // u16 (reserved in v4)
export const HDR_QE_VENDOR_ID = 12; // 16 bytes
export const HDR_USER_DATA = 28; // 20 bytes
export const QE_VENDOR_ID_SIZE = 16;
export const USER_DATA_SIZE = 20;

export const ATT_KEY_TYPE_ECDSA_P256 = 2;
export const TEE_TYPE_TDX = 0x81;
/** Intel's QE vendor id 939a7233-f79c-4ca9-940a-0db3957f0607. */
export const INTEL_QE_VENDOR_ID = '939a7233f79c4ca9940a0db3957f0607';

// --- v5 Quote Body Descriptor (6 bytes at offset 48) -----------------------------------
export const V5_DESCRIPTOR_SIZE = 6; // u16 body type, u32 body size
export const BODY_TYPE_SGX = 1;
export const BODY_TYPE_TD10 = 2;
export const BODY_TYPE_TD15 = 3;

// --- TD Quote Body -----------------------------------------------------------------------
export const TD10_BODY_SIZE = 584;
export const TD15_BODY_SIZE = 648;
export const BODY_TEE_TCB_SVN = 0; // 16
export const BODY_MRSEAM = 16; // 48
export const BODY_MRSIGNERSEAM = 64; // 48
export const BODY_SEAM_ATTRIBUTES = 112; // 8
export const BODY_TD_ATTRIBUTES = 120; // 8
export const BODY_XFAM = 128; // 8
export const BODY_MRTD = 136; // 48
export const BODY_MRCONFIGID = 184; // 48
export const BODY_MROWNER = 232; // 48
export const BODY_MROWNERCONFIG = 280; // 48
export const BODY_RTMR0 = 328; // 4 x 48
export const BODY_REPORT_DATA = 520; // 64
export const BODY_TEE_TCB_SVN2 = 584; // 16 (TD 1.5)
export const BODY_MRSERVICETD = 600; // 48 (TD 1.5)
export const TEE_TCB_SVN_SIZE = 16;
export const MEASUREMENT_SIZE = 48;
export const ATTRIBUTES_SIZE = 8;
export const REPORT_DATA_SIZE = 64;
export const RTMR_COUNT = 4;

/** td_attributes bit 0: TUD.DEBUG (TDX module ABI spec, "ATTRIBUTES"). */
export const TD_ATTR_DEBUG_BIT = 0;
/** td_attributes bit 28: SEPT_VE_DISABLE (only restricts the TD). */
export const TD_ATTR_SEPT_VE_DISABLE_BIT = 28;
export const TD_ATTR_MIGRATABLE_BIT = 29;
export const TD_ATTR_PKS_BIT = 30;
export const TD_ATTR_KL_BIT = 31;
export const TD_ATTR_PERFMON_BIT = 63;

// --- Quote Signature Data (after the body) ------------------------------------------
export const SIG_DATA_LEN_SIZE = 4; // u32
export const ECDSA_SIG_SIZE = 64; // r||s big-endian
export const ATT_KEY_SIZE = 64; // x||y big-endian
export const CERT_DATA_HEADER_SIZE = 6; // u16 type, u32 size
export const CERT_TYPE_PCK_CHAIN = 5;
export const CERT_TYPE_QE_REPORT = 6;

// --- QE report certification data (type 6) ---------------------------------------------
export const QE_REPORT_SIZE = 384;
export const QE_AUTH_SIZE_LEN = 2; // u16

// --- SGX report body (the QE report) -----------------------------------------------------
export const QE_CPUSVN = 0; // 16
export const QE_MISCSELECT = 16; // u32
export const QE_ATTRIBUTES = 48; // 16
export const QE_MRENCLAVE = 64; // 32
export const QE_MRSIGNER = 128; // 32
export const QE_ISVPRODID = 256; // u16
export const QE_ISVSVN = 258; // u16
export const QE_REPORT_DATA = 320; // 64

/** Upper bound on a whole quote we accept to look at (real ones are about 5 KiB). */
export const MAX_QUOTE_BYTES = 64 * 1024;
