//! Guest driver models: what the tests and the simulator run as the guest's IOMMU driver, one
//! per architecture, written from the specification and the Linux driver, all behind
//! [`GuestDriverModel`].

mod amd_driver;
mod model;
mod smmuv3_driver;
mod vtd_driver;

pub use amd_driver::AmdGuestDriver;
pub use model::{
    canonical, read32, read64, resolve_group, write32, write64, DriverError, GuestDriverModel,
    GuestPageTables, GuestResolver, Handled, IdentityResolver, Misbehaviour,
};
pub use smmuv3_driver::{SmmuGuestDriver, SMMU_MSI_DOORBELL};
pub use vtd_driver::VtdGuestDriver;
