//! AMD-Vi register offsets and bits of the page request path, as Linux 6.12 names them
//! (`drivers/iommu/amd/amd_iommu_types.h`; AMD I/O Virtualization Technology (IOMMU)
//! Specification 48882, "MMIO Registers"). The layout test (tests/layout_linux_amd.rs) compiles
//! the header's own macros and compares them with these.

/// `MMIO_DEV_TABLE_OFFSET`: device table base (stored, not used by this model).
pub const DEV_TABLE: u64 = 0x0000;
/// `MMIO_CMD_BUF_OFFSET`: command buffer base \[51:12\] and ComLen \[59:56\].
pub const CMD_BUF: u64 = 0x0008;
/// `MMIO_EVT_BUF_OFFSET`: event log base \[51:12\] and EventLen \[59:56\].
pub const EVT_BUF: u64 = 0x0010;
/// `MMIO_CONTROL_OFFSET`: the control register (64-bit).
pub const CONTROL: u64 = 0x0018;
/// `MMIO_EXCL_BASE_OFFSET` (stored, not used).
pub const EXCL_BASE: u64 = 0x0020;
/// `MMIO_EXCL_LIMIT_OFFSET` (stored, not used).
pub const EXCL_LIMIT: u64 = 0x0028;
/// `MMIO_EXT_FEATURES`: the extended feature register (read only).
pub const EXT_FEATURES: u64 = 0x0030;
/// `MMIO_PPR_LOG_OFFSET`: PPR log base \[51:12\] and PPRLen \[59:56\].
pub const PPR_LOG: u64 = 0x0038;
/// `MMIO_CMD_HEAD_OFFSET`: command buffer head, a byte offset in bits 18:4.
pub const CMD_HEAD: u64 = 0x2000;
/// `MMIO_CMD_TAIL_OFFSET`: command buffer tail, a byte offset in bits 18:4.
pub const CMD_TAIL: u64 = 0x2008;
/// `MMIO_EVT_HEAD_OFFSET`: event log head.
pub const EVT_HEAD: u64 = 0x2010;
/// `MMIO_EVT_TAIL_OFFSET`: event log tail.
pub const EVT_TAIL: u64 = 0x2018;
/// `MMIO_STATUS_OFFSET`: the status register.
pub const STATUS: u64 = 0x2020;
/// `MMIO_PPR_HEAD_OFFSET`: PPR log head.
pub const PPR_HEAD: u64 = 0x2030;
/// `MMIO_PPR_TAIL_OFFSET`: PPR log tail.
pub const PPR_TAIL: u64 = 0x2038;
/// One past the last register this model decodes.
pub const END: u64 = 0x2040;

/// `CONTROL_IOMMU_EN` (bit number).
pub const CONTROL_IOMMU_EN: u32 = 0;
/// `CONTROL_EVT_LOG_EN` (bit number).
pub const CONTROL_EVT_LOG_EN: u32 = 2;
/// `CONTROL_EVT_INT_EN` (bit number).
pub const CONTROL_EVT_INT_EN: u32 = 3;
/// `CONTROL_COMWAIT_EN` (bit number).
pub const CONTROL_COMWAIT_EN: u32 = 4;
/// `CONTROL_CMDBUF_EN` (bit number).
pub const CONTROL_CMDBUF_EN: u32 = 12;
/// `CONTROL_PPRLOG_EN` (bit number).
pub const CONTROL_PPRLOG_EN: u32 = 13;
/// `CONTROL_PPRINT_EN` (bit number).
pub const CONTROL_PPRINT_EN: u32 = 14;
/// `CONTROL_PPR_EN` (bit number).
pub const CONTROL_PPR_EN: u32 = 15;

/// The control bit `n` as a mask.
pub const fn ctl(n: u32) -> u64 {
    1 << n
}

/// `MMIO_STATUS_EVT_OVERFLOW_MASK` (RW1C).
pub const STATUS_EVT_OVERFLOW: u32 = 1 << 0;
/// `MMIO_STATUS_EVT_INT_MASK` (RW1C).
pub const STATUS_EVT_INT: u32 = 1 << 1;
/// `MMIO_STATUS_COM_WAIT_INT_MASK` (RW1C).
pub const STATUS_COMWAIT_INT: u32 = 1 << 2;
/// `MMIO_STATUS_EVT_RUN_MASK` (read only).
pub const STATUS_EVT_RUN: u32 = 1 << 3;
/// CmdBufRun, status bit 4 (read only; Linux names no macro for it).
pub const STATUS_CMDBUF_RUN: u32 = 1 << 4;
/// `MMIO_STATUS_PPR_OVERFLOW_MASK` (RW1C).
pub const STATUS_PPR_OVERFLOW: u32 = 1 << 5;
/// `MMIO_STATUS_PPR_INT_MASK` (RW1C).
pub const STATUS_PPR_INT: u32 = 1 << 6;
/// `MMIO_STATUS_PPR_RUN_MASK` (read only).
pub const STATUS_PPR_RUN: u32 = 1 << 7;
/// The status bits software clears by writing 1.
pub const STATUS_RW1C: u32 = STATUS_EVT_OVERFLOW
    | STATUS_EVT_INT
    | STATUS_COMWAIT_INT
    | STATUS_PPR_OVERFLOW
    | STATUS_PPR_INT;

/// `FEATURE_PPR`: peripheral page requests.
pub const FEATURE_PPR: u64 = 1 << 1;
/// `FEATURE_GT`: guest translation (PASIDs), which Linux requires before it enables PPR.
pub const FEATURE_GT: u64 = 1 << 4;
/// `FEATURE_PASMAX` (bits 36:32): PASID size minus one; Linux computes
/// `max_pasids = (1 << (PASMAX + 1)) - 1` and refuses (BUG_ON) more than 16 bits.
pub const FEATURE_PASMAX_SHIFT: u32 = 32;
/// `FEATURE_PASMAX`'s mask.
pub const FEATURE_PASMAX: u64 = 0x1f << FEATURE_PASMAX_SHIFT;
/// `FEATURE_GIOSUP`: guest I/O protection (the v2 page table).
pub const FEATURE_GIOSUP: u64 = 1 << 48;
/// `FEATURE_EPHSUP`: enhanced PPR handling; `amd_iommu_gt_ppr_supported()` needs GT, PPR and
/// EPHSUP before Linux sets up a PPR log.
pub const FEATURE_EPHSUP: u64 = 1 << 50;
/// The PASMAX this model advertises: 15, 16-bit PASIDs (Linux's `PASID_MASK`).
pub const PASMAX_16_BITS: u64 = 15;
/// The extended features the page request path needs a guest to see: PPR, GT, GIOSUP,
/// EPHSUP and PASMAX = 15. A VMM with its own AMD-Vi model ORs them into its EFR.
pub const EFR_PAGE_REQUESTS: u64 = FEATURE_PPR
    | FEATURE_GT
    | FEATURE_GIOSUP
    | FEATURE_EPHSUP
    | (PASMAX_16_BITS << FEATURE_PASMAX_SHIFT);

/// Where the length field of the command buffer, event log and PPR log base registers sits
/// (`MMIO_CMD_SIZE_SHIFT`, `EVTLOG_SIZE_SHIFT`, `PPRLOG_SIZE_SHIFT`: 56). The field holds
/// log2 of the number of 16-byte entries.
pub const LEN_SHIFT: u32 = 56;
/// The length field's values: 8 (256 entries) to 15 (32,768); 0–7 are reserved.
pub const LEN_MIN: u64 = 8;
/// Linux's default length field: 9, 512 entries, 8 KiB (`MMIO_CMD_SIZE_512`,
/// `EVTLOG_LEN_MASK_DEF`, `PPRLOG_LEN_MASK_DEF`).
pub const LEN_DEFAULT: u64 = 9;
/// The largest length field: 15, 32,768 entries, 512 KiB (`PPRLOG_LEN_MASK_MAX`).
pub const LEN_MAX: u64 = 15;
/// Every entry of the three rings is 16 bytes (`PPRLOG_ENTRY_SIZE`, `EVTLOG_ENTRY_SIZE`, the
/// command size).
pub const ENTRY_BYTES: u64 = 16;
