//! The event log entries this unit writes, 16 bytes each, laid out as Linux 6.12's
//! `iommu_print_event()` reads them (`EVENT_*` in `amd_iommu_types.h`):
//!
//! ```text
//! qword0  devid[15:0] (EVENT_DEVID)  PASID/domain [31:16]  flags[59:48] (EVENT_FLAGS)
//!         type[63:60] (EVENT_TYPE: event[1] >> 28)
//! qword1  the address (event[2], event[3])
//! ```
//!
//! * `ILLEGAL_COMMAND_ERROR` (type 0x5, `EVENT_TYPE_ILL_CMD`): the address is the
//!   guest-physical address of the illegal command; Linux prints it and dumps the command.
//! * `COMMAND_HARDWARE_ERROR` (type 0x6, `EVENT_TYPE_CMD_HARD_ERR`): the address the command
//!   processor could not access (a command fetch, or a COMPLETION_WAIT store).

use super::ppr_entry::{bytes_to_qwords, qwords_to_bytes};

/// `EVENT_TYPE_ILL_CMD`.
pub const ILLEGAL_COMMAND_ERROR: u8 = 0x5;
/// `EVENT_TYPE_CMD_HARD_ERR`.
pub const COMMAND_HARDWARE_ERROR: u8 = 0x6;

/// An event log entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Event {
    /// The event code (qword0 bits 63:60).
    pub code: u8,
    /// The device id (0 for command errors).
    pub devid: u16,
    /// The flags field (12 bits; 0 for the events this unit writes).
    pub flags: u16,
    /// The address.
    pub address: u64,
}

impl Event {
    /// An `ILLEGAL_COMMAND_ERROR` for the command at `address`.
    pub fn illegal_command(address: u64) -> Event {
        Event {
            code: ILLEGAL_COMMAND_ERROR,
            devid: 0,
            flags: 0,
            address,
        }
    }

    /// A `COMMAND_HARDWARE_ERROR` for an access to `address` that failed.
    pub fn command_hardware_error(address: u64) -> Event {
        Event {
            code: COMMAND_HARDWARE_ERROR,
            devid: 0,
            flags: 0,
            address,
        }
    }

    /// The two quadwords.
    pub fn encode(&self) -> [u64; 2] {
        [
            u64::from(self.devid)
                | (u64::from(self.flags & 0xfff) << 48)
                | (u64::from(self.code & 0xf) << 60),
            self.address,
        ]
    }

    /// Reads the fields as `iommu_print_event()` does.
    pub fn decode(qw: &[u64; 2]) -> Event {
        Event {
            code: (qw[0] >> 60) as u8,
            devid: qw[0] as u16,
            flags: ((qw[0] >> 48) & 0xfff) as u16,
            address: qw[1],
        }
    }

    /// The entry's bytes in guest memory.
    pub fn to_bytes(&self) -> [u8; 16] {
        qwords_to_bytes(&self.encode())
    }

    /// An entry read from guest memory.
    pub fn from_bytes(b: &[u8; 16]) -> Event {
        Event::decode(&bytes_to_qwords(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_sits_where_linux_reads_it() {
        let e = Event::illegal_command(0x1234_5670);
        let qw = e.encode();
        // event[1] >> EVENT_TYPE_SHIFT (28) & EVENT_TYPE_MASK.
        assert_eq!(((qw[0] >> 32) as u32 >> 28) & 0xf, 5);
        assert_eq!(Event::from_bytes(&e.to_bytes()), e);
    }
}
