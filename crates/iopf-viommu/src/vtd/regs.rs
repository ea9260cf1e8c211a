//! VT-d register offsets and bits of the page request path (Linux 6.12
//! `drivers/iommu/intel/iommu.h`; VT-d spec chapter 11, "Register Descriptions").

/// Version register (RO): major in bits 7:4, minor in 3:0.
pub const VER: u64 = 0x00;
/// Capability register (RO, 64-bit).
pub const CAP: u64 = 0x08;
/// Extended capability register (RO, 64-bit).
pub const ECAP: u64 = 0x10;
/// Global command (32-bit): only QIE is emulated here.
pub const GCMD: u64 = 0x18;
/// Global status (32-bit, RO).
pub const GSTS: u64 = 0x1c;
/// Fault status (32-bit): IQE here.
pub const FSTS: u64 = 0x34;
/// Fault event control, data, address, upper address (32-bit each).
pub const FECTL: u64 = 0x38;
/// Invalidation queue head (64-bit, RO): bits 18:4.
pub const IQH: u64 = 0x80;
/// Invalidation queue tail (64-bit): bits 18:4.
pub const IQT: u64 = 0x88;
/// Invalidation queue address (64-bit): base 63:12, DW 11, QS 2:0.
pub const IQA: u64 = 0x90;
/// Invalidation completion status (32-bit): IWC bit 0, RW1C.
pub const ICS: u64 = 0x9c;
/// Invalidation event control, data, address, upper address (32-bit each).
pub const IECTL: u64 = 0xa0;
/// Invalidation queue error record (64-bit, RO): IQEI in bits 3:0.
pub const IQER: u64 = 0xb0;
/// Page request queue head (64-bit): bits 18:5, a byte offset.
pub const PQH: u64 = 0xc0;
/// Page request queue tail (64-bit): bits 18:5, a byte offset.
pub const PQT: u64 = 0xc8;
/// Page request queue address (64-bit): base 63:12, PQS 2:0 (2^PQS 4 KiB pages).
pub const PQA: u64 = 0xd0;
/// Page request status (32-bit): PPR bit 0, PRO bit 1, both RW1C.
pub const PRS: u64 = 0xdc;
/// Page request event control, data, address, upper address (32-bit each).
pub const PECTL: u64 = 0xe0;
/// One past the last register this model decodes.
pub const END: u64 = 0xf0;

/// `GCMD.QIE` / `GSTS.QIES`: queued invalidation enable / status.
pub const QIE: u32 = 1 << 26;
/// `FSTS.IQE`: invalidation queue error.
pub const FSTS_IQE: u32 = 1 << 4;
/// `ICS.IWC`: invalidation wait descriptor complete.
pub const ICS_IWC: u32 = 1;
/// `PRS.PPR`: pending page request.
pub const PRS_PPR: u32 = 1;
/// `PRS.PRO`: page request overflow.
pub const PRS_PRO: u32 = 1 << 1;
/// `IQA.DW`: 256-bit descriptors.
pub const IQA_DW: u64 = 1 << 11;

/// `ECAP.QI` (bit 1): queued invalidation.
pub const ECAP_QI: u64 = 1 << 1;
/// `ECAP.DT` (bit 2): device TLB (ATS), which PRI needs.
pub const ECAP_DT: u64 = 1 << 2;
/// `ECAP.PRS` (bit 29): page requests.
pub const ECAP_PRS: u64 = 1 << 29;
/// `ECAP.PASID` (bit 40).
pub const ECAP_PASID: u64 = 1 << 40;
/// `ECAP.PDS` (bit 42): page-request drain in wait descriptors.
pub const ECAP_PDS: u64 = 1 << 42;
/// `ECAP.SMTS` (bit 43): scalable mode.
pub const ECAP_SMTS: u64 = 1 << 43;
/// `ECAP.PSS` (bits 39:35): PASID size supported minus one (19: 20-bit PASIDs).
pub const ECAP_PSS_20: u64 = 19 << 35;

/// The ECAP bits the page request path needs a guest to see: QI, DT, PRS, PASID (20 bits), PDS
/// and SMTS. A VMM with its own VT-d model ORs them into its ECAP.
pub const ECAP_PAGE_REQUESTS: u64 =
    ECAP_QI | ECAP_DT | ECAP_PRS | ECAP_PASID | ECAP_PSS_20 | ECAP_PDS | ECAP_SMTS;

/// `IQER.IQEI` reasons this model reports, numbered as VT-d 4.x's "Invalidation Queue Error
/// Record" lists them (Linux prints the number, `qi_dump_fault()`, and does not act on it).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum IqeReason {
    /// The tail points beyond the queue.
    TailBeyondQueue = 1,
    /// The descriptor could not be fetched from guest memory.
    FetchFailed = 2,
    /// The descriptor's type is invalid, or a reserved field is set.
    InvalidDescriptor = 3,
    /// A 256-bit-only descriptor (page group response with private data) in a 128-bit queue.
    WidthMismatch = 4,
    /// The tail is not 256-bit aligned with 256-bit descriptors (bit 4 set).
    TailMisaligned = 5,
}
