//! Interrupts a vIOMMU raises to its guest, and the one mask/pending rule they share.
//!
//! A VMM implements [`MsiSink`] with its MSI injection or an irqfd; the vIOMMU calls it with the
//! message the guest programmed. VT-d's event interrupts (page request event: `PECTL`,
//! `PEDATA`, `PEADDR`, `PEUADDR`; invalidation completion: `IECTL`…; fault event: `FECTL`…)
//! each follow [`EventInterrupt`]'s rule (VT-d spec, "Interrupt Mask" and "Interrupt Pending"
//! fields of the event control registers): the condition sends the message when unmasked; when
//! masked it sets IP instead, and clearing IM with IP set sends it then; servicing the
//! condition while masked clears IP.

/// Where a vIOMMU's interrupt messages go: the VMM's MSI injection (KVM `KVM_SIGNAL_MSI`, an
/// irqfd routed to the message, or an emulated interrupt controller).
pub trait MsiSink {
    /// Delivers one message. `address` is the full 64-bit message address the guest
    /// programmed, `data` the 32-bit data register.
    fn signal_msi(&mut self, address: u64, data: u32);
}

/// An [`MsiSink`] that counts and keeps the messages, for tests and the simulator.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecordedMsis {
    /// Every message delivered, oldest first.
    pub messages: Vec<(u64, u32)>,
}

impl MsiSink for RecordedMsis {
    fn signal_msi(&mut self, address: u64, data: u32) {
        self.messages.push((address, data));
    }
}

/// Interrupt Mask (`xECTL[31]`).
pub const IM: u32 = 1 << 31;
/// Interrupt Pending (`xECTL[30]`, read only).
pub const IP: u32 = 1 << 30;

/// One event interrupt's registers (control, data, address, upper address) and state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventInterrupt {
    masked: bool,
    pending: bool,
    data: u32,
    addr: u32,
    uaddr: u32,
    sent: u64,
}

impl Default for EventInterrupt {
    /// After reset the interrupt is masked (IM = 1), as the architecture resets it.
    fn default() -> Self {
        EventInterrupt {
            masked: true,
            pending: false,
            data: 0,
            addr: 0,
            uaddr: 0,
            sent: 0,
        }
    }
}

impl EventInterrupt {
    /// The event condition occurred: send the message, or mark it pending when masked.
    pub fn raise(&mut self, sink: &mut dyn MsiSink) {
        if self.masked {
            self.pending = true;
        } else {
            self.send(sink);
        }
    }

    /// The condition was serviced (its status bits cleared): a pending message is dropped.
    pub fn serviced(&mut self) {
        self.pending = false;
    }

    /// The control register as software reads it.
    pub fn ctl(&self) -> u32 {
        (if self.masked { IM } else { 0 }) | (if self.pending { IP } else { 0 })
    }

    /// Software writes the control register: only IM is writable; unmasking with IP set sends
    /// the message.
    pub fn write_ctl(&mut self, value: u32, sink: &mut dyn MsiSink) {
        self.masked = value & IM != 0;
        if !self.masked && self.pending {
            self.send(sink);
        }
    }

    /// Reads the data (0), address (1) or upper address (2) register.
    pub fn reg(&self, which: usize) -> u32 {
        match which {
            0 => self.data,
            1 => self.addr,
            _ => self.uaddr,
        }
    }

    /// Writes the data (0), address (1: bits 1:0 are reserved and read as zero) or upper
    /// address (2) register.
    pub fn write_reg(&mut self, which: usize, value: u32) {
        match which {
            0 => self.data = value,
            1 => self.addr = value & !3,
            _ => self.uaddr = value,
        }
    }

    /// Messages sent so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    fn send(&mut self, sink: &mut dyn MsiSink) {
        self.pending = false;
        self.sent += 1;
        sink.signal_msi(
            (u64::from(self.uaddr) << 32) | u64::from(self.addr),
            self.data,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_events_wait_for_unmask_and_serviced_ones_are_dropped() {
        let mut irq = EventInterrupt::default();
        let mut sink = RecordedMsis::default();
        irq.write_reg(0, 0x41);
        irq.write_reg(1, 0xfee0_0003);
        irq.raise(&mut sink);
        assert_eq!(irq.ctl(), IM | IP);
        assert!(sink.messages.is_empty());
        irq.write_ctl(0, &mut sink);
        assert_eq!(sink.messages, vec![(0xfee0_0000, 0x41)]);
        assert_eq!(irq.ctl(), 0);
        irq.raise(&mut sink);
        assert_eq!(sink.messages.len(), 2);
        irq.write_ctl(IM, &mut sink);
        irq.raise(&mut sink);
        irq.serviced();
        irq.write_ctl(0, &mut sink);
        assert_eq!(sink.messages.len(), 2, "a serviced condition sends nothing");
    }
}
