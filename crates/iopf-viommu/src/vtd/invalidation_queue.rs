//! The VT-d invalidation queue, as far as page responses need it: `IQA`, `IQH`, `IQT`, `ICS`,
//! the invalidation completion event, and the invalidation queue error.
//!
//! Software writes descriptors at `IQT` and moves `IQT`; the hardware fetches from `IQH` to
//! `IQT`, in order. A page group response (type 0x9) goes to the [`PageResponseSink`] (the
//! bridge), which answers the host. An invalidation wait (type 0x5) completes only once every
//! earlier response has reached the host ([`PageResponseSink::flushed`]): until then the queue
//! stops at it, as hardware stops at a wait until the work before it is done, so a guest that
//! waits for its status write knows its responses were sent. Context, IOTLB, device-TLB,
//! interrupt-entry and PASID invalidations (types 0x1–0x4, 0x6–0x8) are accepted and counted:
//! this model holds no translation caches (a VMM that has some runs its own queue and hands
//! page group responses to the bridge).
//!
//! **Errors.** An invalid descriptor (unknown type, a reserved bit set, a reserved response
//! code is *not* one: see [`super::inv_descriptor`]), a descriptor that cannot be fetched, or a
//! tail outside the queue sets `FSTS.IQE` and records the reason in `IQER`; the queue stops
//! with `IQH` at the bad descriptor and fetches nothing until software clears `IQE` (Linux's
//! `qi_check_fault()` overwrites the bad descriptor with its wait descriptor, then clears it).
//! The fault event interrupt is raised. Nothing the descriptor asked for is done.

use crate::guest_ram::GuestRam;
use vm_memory::GuestAddress;

use super::inv_descriptor::{
    descriptor_type, DescriptorError, PageGroupResponse, WaitDescriptor, LAST_DEFINED_TYPE,
    PAGE_GROUP_RESPONSE_TYPE, WAIT_TYPE,
};
use super::regs::{IqeReason, ICS_IWC, IQA_DW};
use crate::bridge::PageResponseSink;
use crate::bridge::PrivateDataMode;
use crate::interrupt::{EventInterrupt, MsiSink};

/// What the invalidation queue has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InvalidationStats {
    /// Page group responses handed to the sink.
    pub page_responses: u64,
    /// Of those, with a code the architecture reserves (taken as Response Failure).
    pub reserved_codes: u64,
    /// Wait descriptors completed.
    pub waits: u64,
    /// Times a wait descriptor had to wait for the sink.
    pub wait_stalls: u64,
    /// Other invalidation descriptors accepted.
    pub other: u64,
    /// Invalidation queue errors.
    pub errors: u64,
}

/// Why the queue stopped with an error, and at which descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueError {
    /// The reason, as `IQER.IQEI` reports it.
    pub reason: IqeReason,
    /// The descriptor's decoding error, when it was an invalid descriptor.
    pub descriptor: Option<DescriptorError>,
    /// `IQH` when it stopped.
    pub head: u64,
}

/// The invalidation queue's registers and state.
#[derive(Debug, Clone, Default)]
pub struct InvalidationQueue {
    iqh: u64,
    iqt: u64,
    iqa: u64,
    ics: u32,
    enabled: bool,
    error: Option<QueueError>,
    /// The invalidation completion event interrupt (`IECTL`, `IEDATA`, `IEADDR`, `IEUADDR`).
    pub event: EventInterrupt,
    stats: InvalidationStats,
}

/// Outcome of [`InvalidationQueue::process`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Processed {
    /// `IQH == IQT` (or the queue is off).
    Drained,
    /// Stopped at a wait descriptor until the sink has flushed; call again later.
    Waiting,
    /// Stopped at an error (`FSTS.IQE`): the caller raises the fault event.
    Error(QueueError),
}

impl InvalidationQueue {
    /// Whether queued invalidation is on (`GSTS.QIES`).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Turns queued invalidation on or off (`GCMD.QIE`); off resets `IQH` to 0.
    pub fn set_enabled(&mut self, on: bool) {
        if !on {
            self.iqh = 0;
        }
        self.enabled = on;
    }

    /// 16 or 32: the descriptor width `IQA.DW` selects.
    pub fn width(&self) -> u64 {
        if self.iqa & IQA_DW != 0 {
            32
        } else {
            16
        }
    }

    /// The queue's size in bytes (`2^QS` 4 KiB pages).
    pub fn size_bytes(&self) -> u64 {
        4096 << (self.iqa & 7)
    }

    /// The error the queue stopped at, while `FSTS.IQE` is set.
    pub fn error(&self) -> Option<QueueError> {
        self.error
    }

    /// Software cleared `FSTS.IQE`: fetching resumes at `IQH` on the next
    /// [`process`](Self::process).
    pub fn clear_error(&mut self) {
        self.error = None;
    }

    /// `ICS`.
    pub fn ics(&self) -> u32 {
        self.ics
    }

    /// Software writes `ICS`: 1 clears `IWC`.
    pub fn write_ics(&mut self, value: u32) {
        self.ics &= !(value & ICS_IWC);
        if self.ics == 0 {
            self.event.serviced();
        }
    }

    /// The counters.
    pub fn stats(&self) -> InvalidationStats {
        self.stats
    }

    /// Reads `IQH` (0), `IQT` (1), `IQA` (2) or `IQER` (3).
    pub fn reg(&self, which: usize) -> u64 {
        match which {
            0 => self.iqh,
            1 => self.iqt,
            2 => self.iqa,
            _ => self.error.map_or(0, |e| e.reason as u64),
        }
    }

    /// Writes `IQT` (1) or `IQA` (2); `IQH` and `IQER` are read only.
    pub fn write_reg(&mut self, which: usize, value: u64) {
        match which {
            1 => self.iqt = value & 0x7_fff0,
            2 => self.iqa = value & !0x7f8,
            _ => {}
        }
    }

    /// Fetches and carries out descriptors from `IQH` to `IQT`, by the rules of this module's
    /// documentation. `mode` says whether page group responses may carry private data.
    pub fn process(
        &mut self,
        mem: &impl GuestRam,
        sink: &mut dyn PageResponseSink,
        mode: PrivateDataMode,
        irq: &mut dyn MsiSink,
    ) -> Processed {
        if !self.enabled {
            return Processed::Drained;
        }
        if let Some(e) = self.error {
            return Processed::Error(e);
        }
        let width = self.width();
        if self.iqt >= self.size_bytes() {
            return self.fail(IqeReason::TailBeyondQueue, None);
        }
        if width == 32 && self.iqt & 0x10 != 0 {
            return self.fail(IqeReason::TailMisaligned, None);
        }
        // The head the hardware keeps is always inside the queue and aligned to its width,
        // unless the guest changed IQA.DW or QS while the queue was on (the spec has it write
        // IQA only while off): then fetching restarts at the top, as when the queue is enabled.
        if self.iqh >= self.size_bytes() || self.iqh % width != 0 {
            self.iqh = 0;
        }
        while self.iqh != self.iqt {
            let mut bytes = [0u8; 32];
            let at = GuestAddress((self.iqa & !0xfff).wrapping_add(self.iqh));
            if mem.read_guest(&mut bytes[..width as usize], at).is_err() {
                return self.fail(IqeReason::FetchFailed, None);
            }
            let qw = super::page_request::from_bytes(&bytes);
            match descriptor_type(qw[0]) {
                PAGE_GROUP_RESPONSE_TYPE => {
                    if width == 16 && mode == PrivateDataMode::Carried && qw[0] & (1 << 5) != 0 {
                        // Private data lives in qw2–3: a 256-bit descriptor.
                        return self.fail(IqeReason::WidthMismatch, None);
                    }
                    match PageGroupResponse::decode(&qw, mode) {
                        Ok(r) => {
                            self.stats.page_responses += 1;
                            if r.raw_code_reserved() {
                                self.stats.reserved_codes += 1;
                            }
                            sink.page_response(&r.to_guest());
                        }
                        Err(e) => return self.fail(IqeReason::InvalidDescriptor, Some(e)),
                    }
                }
                WAIT_TYPE => match WaitDescriptor::decode(&qw) {
                    Ok(w) => {
                        if !sink.flushed() {
                            self.stats.wait_stalls += 1;
                            return Processed::Waiting;
                        }
                        if w.status_write
                            && mem
                                .write_guest(
                                    &w.status_data.to_le_bytes(),
                                    GuestAddress(w.status_address),
                                )
                                .is_err()
                        {
                            return self.fail(IqeReason::FetchFailed, None);
                        }
                        if w.interrupt && self.ics & ICS_IWC == 0 {
                            self.ics |= ICS_IWC;
                            self.event.raise(irq);
                        }
                        self.stats.waits += 1;
                    }
                    Err(e) => return self.fail(IqeReason::InvalidDescriptor, Some(e)),
                },
                1..=LAST_DEFINED_TYPE => self.stats.other += 1,
                ty => {
                    return self.fail(
                        IqeReason::InvalidDescriptor,
                        Some(DescriptorError::BadType(ty)),
                    )
                }
            }
            self.iqh = (self.iqh + width) % self.size_bytes();
        }
        Processed::Drained
    }

    fn fail(&mut self, reason: IqeReason, descriptor: Option<DescriptorError>) -> Processed {
        let e = QueueError {
            reason,
            descriptor,
            head: self.iqh,
        };
        self.error = Some(e);
        self.stats.errors += 1;
        Processed::Error(e)
    }
}
