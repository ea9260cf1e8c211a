//! A fresh iommufd with a mock device attached to a fault-capable HWPT, for one test (the flow of
//! `tools/testing/selftests/iommu/iommufd.c`'s `hwpt_alloc` test).

use iopf_abi::Perm;
use iopf_iommufd::differential::Target;
use iopf_iommufd::selftest::{
    selftest_hwpt_data, MockDevice, TriggerIopf, IOMMU_HWPT_DATA_SELFTEST,
};
use iopf_iommufd::{
    attach_hwpt, FaultFd, FaultQueue, HwptAlloc, Iommufd, IOMMU_HWPT_ALLOC_NEST_PARENT,
};

/// Adds the step's name to an error.
pub trait Ctx<T> {
    /// `Err(e)` becomes `Err("what: e")`.
    fn ctx(self, what: &str) -> Result<T, String>;
}

impl<T, E: std::fmt::Display> Ctx<T> for Result<T, E> {
    fn ctx(self, what: &str) -> Result<T, String> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

/// Everything one test needs; dropping it closes the iommufd, which destroys every object.
pub struct Fixture {
    pub iommufd: Iommufd,
    pub ioas: u32,
    pub mock: MockDevice,
    pub parent: u32,
    pub fq: FaultQueue,
    pub iopf_hwpt: u32,
}

impl Fixture {
    /// IOAS_ALLOC → MOCK_DOMAIN → HWPT_ALLOC(NEST_PARENT) → FAULT_QUEUE_ALLOC →
    /// HWPT_ALLOC(selftest data, FAULT_ID_VALID) → attach (MOCK_DOMAIN_REPLACE).
    pub fn new() -> Result<Fixture, String> {
        let iommufd = Iommufd::open().ctx("open /dev/iommu")?;
        let ioas = iommufd.alloc_ioas().ctx("IOAS_ALLOC")?;
        let mock = MockDevice::create(&iommufd, ioas).ctx("MOCK_DOMAIN")?;
        let parent = iommufd
            .alloc_hwpt(&HwptAlloc {
                dev_id: mock.dev_id,
                pt_id: ioas,
                flags: IOMMU_HWPT_ALLOC_NEST_PARENT,
                data_type: 0,
                data: &[],
                fault_id: None,
            })
            .ctx("HWPT_ALLOC(NEST_PARENT)")?;
        let fq = iommufd.alloc_fault_queue().ctx("FAULT_QUEUE_ALLOC")?;
        let iopf_hwpt = iommufd
            .alloc_fault_hwpt(
                mock.dev_id,
                parent,
                IOMMU_HWPT_DATA_SELFTEST,
                &selftest_hwpt_data(),
                &fq,
            )
            .ctx("HWPT_ALLOC(FAULT_ID_VALID)")?;
        attach_hwpt(&mock, iopf_hwpt).ctx("attach the fault-capable HWPT")?;
        Ok(Fixture {
            iommufd,
            ioas,
            mock,
            parent,
            fq,
            iopf_hwpt,
        })
    }

    /// The mock device reports one page request.
    pub fn trigger(&self, pasid: u32, grpid: u32, perm: Perm, addr: u64) -> Result<(), String> {
        self.mock
            .trigger_iopf(&TriggerIopf {
                pasid,
                grpid,
                perm,
                addr,
            })
            .ctx("TRIGGER_IOPF")
    }
}

impl Target for Fixture {
    fn fd(&mut self) -> &mut dyn FaultFd {
        &mut self.fq
    }

    fn trigger(
        &mut self,
        pasid: u32,
        grpid: u32,
        perm: u32,
        addr: u64,
    ) -> iopf_iommufd::Result<()> {
        self.mock.trigger_iopf(&TriggerIopf {
            pasid,
            grpid,
            perm: Perm::from_bits_retain(perm),
            addr,
        })
    }

    /// To the NEST_PARENT HWPT: a paging domain without a fault queue, which outlives the
    /// attachment (an automatic domain would be destroyed on leaving it).
    fn detach(&mut self) -> iopf_iommufd::Result<()> {
        self.mock.replace(self.parent).map(|_| ())
    }

    fn attach(&mut self) -> iopf_iommufd::Result<()> {
        self.mock.replace(self.iopf_hwpt).map(|_| ())
    }
}
