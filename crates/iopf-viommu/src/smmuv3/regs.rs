//! SMMUv3 register offsets and bits of the page request path, named as Linux 6.12's
//! `drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h` names them (SMMUv3 spec chapter 6, "Memory map
//! and registers"). Offsets are from the unit's base; page 1 starts at [`PAGE1`].

/// The second 64 KiB register page (`SMMUv3_PAGE_1`): the queues' PROD/CONS of the output
/// queues live there (Linux's `smmu->page1`).
pub const PAGE1: u64 = 0x1_0000;
/// One past the last register this model decodes: two 64 KiB pages.
pub const END: u64 = 0x2_0000;

/// `SMMU_IDR0` (RO).
pub const IDR0: u64 = 0x0;
/// `SMMU_IDR1` (RO).
pub const IDR1: u64 = 0x4;
/// `SMMU_IDR2` (RO, reads zero here).
pub const IDR2: u64 = 0x8;
/// `SMMU_IDR3` (RO, reads zero here: `PPS` = 0, so `STE.PPAR` counts).
pub const IDR3: u64 = 0xc;
/// `SMMU_IDR4` (RO, implementation defined: zero).
pub const IDR4: u64 = 0x10;
/// `SMMU_IDR5` (RO): output address size and granules.
pub const IDR5: u64 = 0x14;
/// `SMMU_IIDR` (RO, zero).
pub const IIDR: u64 = 0x18;
/// `SMMU_AIDR` (RO, zero: SMMUv3.0).
pub const AIDR: u64 = 0x1c;
/// `SMMU_CR0`: queue and translation enables.
pub const CR0: u64 = 0x20;
/// `SMMU_CR0ACK` (RO): mirrors `CR0` once a change took effect (at once in this model).
pub const CR0ACK: u64 = 0x24;
/// `SMMU_CR1`: table and queue memory attributes (stored, not used).
pub const CR1: u64 = 0x28;
/// `SMMU_CR2` (stored, not used).
pub const CR2: u64 = 0x2c;
/// `SMMU_GBPA`: global bypass attributes (stored; `UPDATE` completes at once).
pub const GBPA: u64 = 0x44;
/// `SMMU_IRQ_CTRL`: interrupt enables.
pub const IRQ_CTRL: u64 = 0x50;
/// `SMMU_IRQ_CTRLACK` (RO): mirrors `IRQ_CTRL`.
pub const IRQ_CTRLACK: u64 = 0x54;
/// `SMMU_GERROR` (RO): global errors, each toggled when it becomes active.
pub const GERROR: u64 = 0x60;
/// `SMMU_GERRORN`: software acknowledges an error by making its bit equal `GERROR`'s.
pub const GERRORN: u64 = 0x64;
/// `SMMU_GERROR_IRQ_CFG0` (64-bit): MSI address \[51:2\].
pub const GERROR_IRQ_CFG0: u64 = 0x68;
/// `SMMU_GERROR_IRQ_CFG1`: MSI data.
pub const GERROR_IRQ_CFG1: u64 = 0x70;
/// `SMMU_GERROR_IRQ_CFG2`: MSI attributes.
pub const GERROR_IRQ_CFG2: u64 = 0x74;
/// `SMMU_STRTAB_BASE` (64-bit): RA\[62\], ADDR\[51:6\].
pub const STRTAB_BASE: u64 = 0x80;
/// `SMMU_STRTAB_BASE_CFG`: FMT\[17:16\], SPLIT\[10:6\], LOG2SIZE\[5:0\].
pub const STRTAB_BASE_CFG: u64 = 0x88;
/// `SMMU_CMDQ_BASE` (64-bit): RA\[62\], ADDR\[51:5\], LOG2SIZE\[4:0\].
pub const CMDQ_BASE: u64 = 0x90;
/// `SMMU_CMDQ_PROD`: written by software.
pub const CMDQ_PROD: u64 = 0x98;
/// `SMMU_CMDQ_CONS`: the unit's read pointer and `ERR`\[30:24\].
pub const CMDQ_CONS: u64 = 0x9c;
/// `SMMU_EVENTQ_BASE` (64-bit).
pub const EVTQ_BASE: u64 = 0xa0;
/// `SMMU_EVENTQ_PROD` (page 1): written by the unit; `OVFLG` bit 31.
pub const EVTQ_PROD: u64 = PAGE1 + 0xa8;
/// `SMMU_EVENTQ_CONS` (page 1): written by software; `OVACKFLG` bit 31.
pub const EVTQ_CONS: u64 = PAGE1 + 0xac;
/// `SMMU_EVENTQ_IRQ_CFG0` (64-bit): MSI address.
pub const EVTQ_IRQ_CFG0: u64 = 0xb0;
/// `SMMU_EVENTQ_IRQ_CFG1`: MSI data.
pub const EVTQ_IRQ_CFG1: u64 = 0xb8;
/// `SMMU_EVENTQ_IRQ_CFG2`: MSI attributes.
pub const EVTQ_IRQ_CFG2: u64 = 0xbc;
/// `SMMU_PRIQ_BASE` (64-bit).
pub const PRIQ_BASE: u64 = 0xc0;
/// `SMMU_PRIQ_PROD` (page 1): written by the unit; `OVFLG` bit 31.
pub const PRIQ_PROD: u64 = PAGE1 + 0xc8;
/// `SMMU_PRIQ_CONS` (page 1): written by software; `OVACKFLG` bit 31.
pub const PRIQ_CONS: u64 = PAGE1 + 0xcc;
/// `SMMU_PRIQ_IRQ_CFG0` (64-bit): MSI address.
pub const PRIQ_IRQ_CFG0: u64 = 0xd0;
/// `SMMU_PRIQ_IRQ_CFG1`: MSI data.
pub const PRIQ_IRQ_CFG1: u64 = 0xd8;
/// `SMMU_PRIQ_IRQ_CFG2`: MSI attributes (and `LO`, bit 31, not modelled).
pub const PRIQ_IRQ_CFG2: u64 = 0xdc;

/// `IDR0.ST_LVL` \[28:27\]: 0, a linear stream table only.
pub const IDR0_ST_LVL_SHIFT: u32 = 27;
/// `IDR0.STALL_MODEL` \[25:24\]: 0 = stall and terminate models both supported.
pub const IDR0_STALL_MODEL_SHIFT: u32 = 24;
/// `IDR0.PRI`.
pub const IDR0_PRI: u32 = 1 << 16;
/// `IDR0.MSI`.
pub const IDR0_MSI: u32 = 1 << 13;
/// `IDR0.ATS` (PRI needs ATS).
pub const IDR0_ATS: u32 = 1 << 10;
/// `IDR0.COHACC`.
pub const IDR0_COHACC: u32 = 1 << 4;
/// `IDR0.TTF` = AArch64 (2 in bits 3:2).
pub const IDR0_TTF_AARCH64: u32 = 2 << 2;
/// `IDR0.S1P`.
pub const IDR0_S1P: u32 = 1 << 1;
/// What this model's `IDR0` reads: PRI, MSI, ATS, coherent, stage 1 AArch64, a linear stream
/// table, both stall models.
pub const IDR0_VALUE: u32 =
    IDR0_PRI | IDR0_MSI | IDR0_ATS | IDR0_COHACC | IDR0_TTF_AARCH64 | IDR0_S1P;

/// `IDR1.CMDQS` \[25:21\].
pub const IDR1_CMDQS_SHIFT: u32 = 21;
/// `IDR1.EVTQS` \[20:16\].
pub const IDR1_EVTQS_SHIFT: u32 = 16;
/// `IDR1.PRIQS` \[15:11\].
pub const IDR1_PRIQS_SHIFT: u32 = 11;
/// `IDR1.SSIDSIZE` \[10:6\].
pub const IDR1_SSIDSIZE_SHIFT: u32 = 6;
/// `IDR1.SIDSIZE` \[5:0\].
pub const IDR1_SIDSIZE_SHIFT: u32 = 0;
/// The StreamID bits this model has (`IDR1.SIDSIZE`): 16, a PCIe requester id.
pub const SIDSIZE: u32 = 16;
/// The SubstreamID bits (`IDR1.SSIDSIZE`): 20, a PCIe PASID.
pub const SSIDSIZE: u32 = 20;
/// `IDR5`: 4 KiB granule (bit 4), 48-bit output addresses (`OAS` = 5).
pub const IDR5_VALUE: u32 = (1 << 4) | 5;

/// `CR0.ATSCHK`.
pub const CR0_ATSCHK: u32 = 1 << 4;
/// `CR0.CMDQEN`.
pub const CR0_CMDQEN: u32 = 1 << 3;
/// `CR0.EVTQEN`.
pub const CR0_EVTQEN: u32 = 1 << 2;
/// `CR0.PRIQEN`.
pub const CR0_PRIQEN: u32 = 1 << 1;
/// `CR0.SMMUEN`.
pub const CR0_SMMUEN: u32 = 1 << 0;
/// The `CR0` bits this model keeps.
pub const CR0_MASK: u32 = 0x1f;

/// `GBPA.UPDATE` (bit 31): cleared at once.
pub const GBPA_UPDATE: u32 = 1 << 31;

/// `IRQ_CTRL.EVTQ_IRQEN`.
pub const IRQ_CTRL_EVTQ_IRQEN: u32 = 1 << 2;
/// `IRQ_CTRL.PRIQ_IRQEN`.
pub const IRQ_CTRL_PRIQ_IRQEN: u32 = 1 << 1;
/// `IRQ_CTRL.GERROR_IRQEN`.
pub const IRQ_CTRL_GERROR_IRQEN: u32 = 1 << 0;
/// The `IRQ_CTRL` bits.
pub const IRQ_CTRL_MASK: u32 = 0x7;

/// `GERROR.MSI_GERROR_ABT_ERR`.
pub const GERROR_MSI_GERROR_ABT_ERR: u32 = 1 << 7;
/// `GERROR.MSI_PRIQ_ABT_ERR`.
pub const GERROR_MSI_PRIQ_ABT_ERR: u32 = 1 << 6;
/// `GERROR.MSI_EVTQ_ABT_ERR`.
pub const GERROR_MSI_EVTQ_ABT_ERR: u32 = 1 << 5;
/// `GERROR.MSI_CMDQ_ABT_ERR`: a `CMD_SYNC` completion write failed.
pub const GERROR_MSI_CMDQ_ABT_ERR: u32 = 1 << 4;
/// `GERROR.PRIQ_ABT_ERR`: a PRI queue write failed; no entries are written while active.
pub const GERROR_PRIQ_ABT_ERR: u32 = 1 << 3;
/// `GERROR.EVTQ_ABT_ERR`: an event queue write failed.
pub const GERROR_EVTQ_ABT_ERR: u32 = 1 << 2;
/// `GERROR.CMDQ_ERR`: the command queue stopped at an error (`CMDQ_CONS.ERR`).
pub const GERROR_CMDQ_ERR: u32 = 1 << 0;
/// The error bits (`GERROR_ERR_MASK`, 0x1fd; `SFM_ERR` is never raised here).
pub const GERROR_ERR_MASK: u32 = 0x1fd;

/// `STRTAB_BASE.RA`.
pub const STRTAB_BASE_RA: u64 = 1 << 62;
/// `STRTAB_BASE.ADDR` \[51:6\].
pub const STRTAB_BASE_ADDR_MASK: u64 = 0x000f_ffff_ffff_ffc0;
/// `STRTAB_BASE_CFG.FMT` \[17:16\] shift (0 linear, 1 two-level).
pub const STRTAB_BASE_CFG_FMT_SHIFT: u32 = 16;
/// The `STRTAB_BASE_CFG` bits: FMT, SPLIT, LOG2SIZE.
pub const STRTAB_BASE_CFG_MASK: u32 = (3 << 16) | (0x1f << 6) | 0x3f;

/// `Q_BASE_RWA` (bit 62).
pub const Q_BASE_RWA: u64 = 1 << 62;
/// `Q_BASE_ADDR_MASK` \[51:5\].
pub const Q_BASE_ADDR_MASK: u64 = 0x000f_ffff_ffff_ffe0;
/// `Q_BASE_LOG2SIZE` \[4:0\].
pub const Q_BASE_LOG2SIZE: u64 = 0x1f;

/// `MSI_CFG0_ADDR_MASK` \[51:2\].
pub const MSI_CFG0_ADDR_MASK: u64 = 0x000f_ffff_ffff_fffc;
/// The `IRQ_CFG2` bits kept: SH\[5:4\], MEMATTR\[3:0\] (and the PRI queue's `LO`, bit 31).
pub const MSI_CFG2_MASK: u32 = (1 << 31) | 0x3f;

/// `CMDQ_CONS.ERR` \[30:24\].
pub const CMDQ_CONS_ERR_SHIFT: u32 = 24;
/// `CMDQ_CONS.ERR` mask (in place).
pub const CMDQ_CONS_ERR: u32 = 0x7f << 24;
/// `CERROR_NONE`.
pub const CERROR_NONE: u8 = 0;
/// `CERROR_ILL`: an illegal command (unknown opcode, reserved field value, RES0 bit set).
pub const CERROR_ILL: u8 = 1;
/// `CERROR_ABT`: an abort on command fetch.
pub const CERROR_ABT: u8 = 2;
