//! SMMUv3 commands, 16 bytes each (SMMUv3 spec chapter 4; Linux 6.12
//! `arm_smmu_cmdq_build_cmd()` and the `CMDQ_*` macros of `arm-smmu-v3.h`). Decoded here: the
//! page response path's four, with their RES0 bits checked:
//!
//! ```text
//! CMD_PRI_RESP   0x41  dw0 SSV[11] SSID[31:12] SID[63:32]   dw1 GRPID[8:0] RESP[13:12]
//! CMD_RESUME     0x44  dw0 RESP[13:12] SID[63:32]           dw1 STAG[15:0]
//! CMD_STALL_TERM 0x45  dw0 SID[63:32]
//! CMD_SYNC       0x46  dw0 CS[13:12] MSH[23:22] MSIATTR[27:24] MSIDATA[63:32]
//!                      dw1 MSIADDR[51:2]
//! ```
//!
//! (`CMD_RESUME`'s `RESP` is in dw0, where Linux's `CMDQ_RESUME_0_RESP` puts it. `SSec`, bit 10
//! of `CMD_RESUME` and `CMD_STALL_TERM`, is RES0 in a Non-secure queue.) The other opcodes Linux
//! issues (`CMD_PREFETCH_*`, `CMD_CFGI_*`, `CMD_TLBI_*` without EL2/EL3, `CMD_ATC_INV`) are
//! [`Command::Other`]: accepted, not modelled. Anything else is illegal (`CERROR_ILL`).

use super::pri_entry::{bytes, dwords};

/// Bytes per command.
pub const COMMAND_BYTES: usize = 16;
/// `CMDQ_OP_PRI_RESP`.
pub const CMD_PRI_RESP: u8 = 0x41;
/// `CMDQ_OP_RESUME`.
pub const CMD_RESUME: u8 = 0x44;
/// `CMD_STALL_TERM` (Linux 6.12 does not issue it).
pub const CMD_STALL_TERM: u8 = 0x45;
/// `CMDQ_OP_CMD_SYNC`.
pub const CMD_SYNC: u8 = 0x46;
/// Opcodes accepted without effect: `PREFETCH_CONFIG` 0x1, `PREFETCH_ADDR` 0x2, `CFGI_STE`
/// 0x3, `CFGI_STE_RANGE`/`CFGI_ALL` 0x4, `CFGI_CD` 0x5, `CFGI_CD_ALL` 0x6, `TLBI_NH_ALL` 0x10,
/// `TLBI_NH_ASID` 0x11, `TLBI_NH_VA` 0x12, `TLBI_NH_VAA` 0x13, `TLBI_S12_VMALL` 0x28,
/// `TLBI_S2_IPA` 0x2a, `TLBI_NSNH_ALL` 0x30, `ATC_INV` 0x40. (The EL2 TLBIs need `IDR0.HYP`,
/// which this model does not advertise.)
pub const ACCEPTED_OTHER: [u8; 14] = [
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x10, 0x11, 0x12, 0x13, 0x28, 0x2a, 0x30, 0x40,
];

/// `CMD_SYNC.CS`: what completion signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyncCs {
    /// `SIG_NONE`.
    None = 0,
    /// `SIG_IRQ`: an MSI write of `MSIDATA` to `MSIADDR` (Linux's MSI-poll points it at the
    /// command itself and waits for its first word to read zero).
    Irq = 1,
    /// `SIG_SEV`: a WFE wake-up event.
    Sev = 2,
}

/// A decoded command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// `CMD_PRI_RESP`: a PRG response to a PCIe function.
    PriResp {
        /// The StreamID.
        sid: u32,
        /// The SubstreamID, when `SSV`.
        ssid: Option<u32>,
        /// The PRG index (9 bits).
        grpid: u16,
        /// `RESP`: DENY 0, FAIL 1, SUCC 2 (3 is reserved and does not decode).
        resp: u8,
    },
    /// `CMD_RESUME`: retry or abort a stalled transaction.
    Resume {
        /// The StreamID.
        sid: u32,
        /// The stall tag.
        stag: u16,
        /// `RESP`: TERM 0, RETRY 1, ABORT 2 (3 does not decode).
        resp: u8,
    },
    /// `CMD_STALL_TERM`: abort every stalled transaction of a stream.
    StallTerm {
        /// The StreamID.
        sid: u32,
    },
    /// `CMD_SYNC`: completes once every earlier command has.
    Sync {
        /// The completion signal.
        cs: SyncCs,
        /// `MSH`, the MSI's shareability.
        msh: u8,
        /// `MSIATTR`.
        msi_attr: u8,
        /// `MSIDATA`.
        msi_data: u32,
        /// `MSIADDR` (bits 51:2).
        msi_addr: u64,
    },
    /// Another opcode Linux issues, accepted and not modelled.
    Other {
        /// The opcode.
        opcode: u8,
    },
}

/// Why 16 bytes are an illegal command (`CERROR_ILL`).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum CommandError {
    /// The opcode is not one this unit implements.
    #[error("opcode {0:#04x} is not a command this unit implements")]
    UnknownOpcode(u8),
    /// A RES0 bit of a decoded command is set.
    #[error("RES0 bits {mask:#018x} of dw{dw} are set")]
    ReservedBits {
        /// Which doubleword.
        dw: usize,
        /// The bits.
        mask: u64,
    },
    /// `RESP` is 3, which neither `CMD_PRI_RESP` nor `CMD_RESUME` defines.
    #[error("response value 3 is reserved")]
    ReservedResp,
    /// `CMD_SYNC.CS` is 3.
    #[error("CMD_SYNC completion signal 3 is reserved")]
    ReservedCs,
}

const SID_FIELD: u64 = 0xffff_ffff << 32;
const OP: u64 = 0xff;
const SSV: u64 = 1 << 11;
const SSID_FIELD: u64 = 0xf_ffff << 12;
const RESP_FIELD: u64 = 3 << 12;
const SYNC_DW0: u64 = OP | (3 << 12) | (3 << 22) | (0xf << 24) | SID_FIELD;
const SYNC_DW1: u64 = 0x000f_ffff_ffff_fffc;

fn check(dw: &[u64; 2], fields: [u64; 2]) -> Result<(), CommandError> {
    for (i, (w, f)) in dw.iter().zip(fields).enumerate() {
        if w & !f != 0 {
            return Err(CommandError::ReservedBits {
                dw: i,
                mask: w & !f,
            });
        }
    }
    Ok(())
}

impl Command {
    /// The opcode of a command's doublewords.
    pub fn opcode(dw: &[u64; 2]) -> u8 {
        dw[0] as u8
    }

    /// Decodes strictly: an opcode this unit implements, RES0 bits clear, defined `RESP`/`CS`.
    pub fn decode(dw: &[u64; 2]) -> Result<Command, CommandError> {
        let op = Self::opcode(dw);
        let sid = (dw[0] >> 32) as u32;
        match op {
            CMD_PRI_RESP => {
                check(dw, [OP | SSV | SSID_FIELD | SID_FIELD, 0x1ff | RESP_FIELD])?;
                let resp = ((dw[1] >> 12) & 3) as u8;
                if crate::code_map::smmu_pri_resp_to_pcie(resp).is_none() {
                    return Err(CommandError::ReservedResp);
                }
                Ok(Command::PriResp {
                    sid,
                    ssid: (dw[0] & SSV != 0).then_some(((dw[0] >> 12) & 0xf_ffff) as u32),
                    grpid: (dw[1] & 0x1ff) as u16,
                    resp,
                })
            }
            CMD_RESUME => {
                check(dw, [OP | RESP_FIELD | SID_FIELD, 0xffff])?;
                let resp = ((dw[0] >> 12) & 3) as u8;
                if crate::code_map::smmu_resume_to_pcie(resp).is_none() {
                    return Err(CommandError::ReservedResp);
                }
                Ok(Command::Resume {
                    sid,
                    stag: dw[1] as u16,
                    resp,
                })
            }
            CMD_STALL_TERM => {
                check(dw, [OP | SID_FIELD, 0])?;
                Ok(Command::StallTerm { sid })
            }
            CMD_SYNC => {
                check(dw, [SYNC_DW0, SYNC_DW1])?;
                let cs = match (dw[0] >> 12) & 3 {
                    0 => SyncCs::None,
                    1 => SyncCs::Irq,
                    2 => SyncCs::Sev,
                    _ => return Err(CommandError::ReservedCs),
                };
                Ok(Command::Sync {
                    cs,
                    msh: ((dw[0] >> 22) & 3) as u8,
                    msi_attr: ((dw[0] >> 24) & 0xf) as u8,
                    msi_data: sid,
                    msi_addr: dw[1] & SYNC_DW1,
                })
            }
            op if ACCEPTED_OTHER.contains(&op) => Ok(Command::Other { opcode: op }),
            op => Err(CommandError::UnknownOpcode(op)),
        }
    }

    /// The command's doublewords, as Linux builds them (fields masked to their widths;
    /// [`Command::Other`] is its opcode alone).
    pub fn encode(&self) -> [u64; 2] {
        match *self {
            Command::PriResp {
                sid,
                ssid,
                grpid,
                resp,
            } => {
                let mut dw0 = u64::from(CMD_PRI_RESP) | (u64::from(sid) << 32);
                if let Some(s) = ssid {
                    dw0 |= SSV | ((u64::from(s) & 0xf_ffff) << 12);
                }
                [dw0, u64::from(grpid & 0x1ff) | (u64::from(resp & 3) << 12)]
            }
            Command::Resume { sid, stag, resp } => [
                u64::from(CMD_RESUME) | (u64::from(resp & 3) << 12) | (u64::from(sid) << 32),
                u64::from(stag),
            ],
            Command::StallTerm { sid } => [u64::from(CMD_STALL_TERM) | (u64::from(sid) << 32), 0],
            Command::Sync {
                cs,
                msh,
                msi_attr,
                msi_data,
                msi_addr,
            } => [
                u64::from(CMD_SYNC)
                    | ((cs as u64) << 12)
                    | (u64::from(msh & 3) << 22)
                    | (u64::from(msi_attr & 0xf) << 24)
                    | (u64::from(msi_data) << 32),
                msi_addr & SYNC_DW1,
            ],
            Command::Other { opcode } => [u64::from(opcode), 0],
        }
    }

    /// Decodes 16 little-endian bytes strictly ([`decode`](Self::decode)).
    pub fn from_bytes(b: &[u8; COMMAND_BYTES]) -> Result<Command, CommandError> {
        Self::decode(&dwords(b))
    }

    /// The command's 16 bytes as they sit in the command queue.
    pub fn to_bytes(&self) -> [u8; COMMAND_BYTES] {
        bytes(&self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let cmds = [
            Command::PriResp {
                sid: 8,
                ssid: Some(5),
                grpid: 0x1ff,
                resp: 2,
            },
            Command::PriResp {
                sid: 8,
                ssid: None,
                grpid: 3,
                resp: 0,
            },
            Command::Resume {
                sid: 0x10,
                stag: 0xffff,
                resp: 1,
            },
            Command::StallTerm { sid: 0x10 },
            Command::Sync {
                cs: SyncCs::Irq,
                msh: 3,
                msi_attr: 0xf,
                msi_data: 0,
                msi_addr: 0x1000,
            },
            Command::Other { opcode: 0x30 },
        ];
        for c in cmds {
            assert_eq!(Command::from_bytes(&c.to_bytes()), Ok(c), "{c:?}");
        }
    }

    #[test]
    fn illegal_commands_say_why() {
        assert_eq!(
            Command::decode(&[0x99, 0]),
            Err(CommandError::UnknownOpcode(0x99))
        );
        assert_eq!(
            Command::decode(&[u64::from(CMD_PRI_RESP), 3 << 12]),
            Err(CommandError::ReservedResp)
        );
        assert_eq!(
            Command::decode(&[u64::from(CMD_RESUME) | (1 << 10), 0]),
            Err(CommandError::ReservedBits {
                dw: 0,
                mask: 1 << 10
            })
        );
        assert_eq!(
            Command::decode(&[u64::from(CMD_SYNC) | (3 << 12), 0]),
            Err(CommandError::ReservedCs)
        );
        assert_eq!(
            Command::decode(&[u64::from(CMD_STALL_TERM), 1]),
            Err(CommandError::ReservedBits { dw: 1, mask: 1 })
        );
    }
}
