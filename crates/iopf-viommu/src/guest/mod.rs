//! Guest driver models: what the tests and the simulator run as the guest's IOMMU driver, one
//! per architecture, written from the specification and the Linux driver.

mod vtd_driver;

pub use vtd_driver::{
    DriverError, GuestPageTables, GuestResolver, Handled, IdentityResolver, Misbehaviour,
    VtdGuestDriver,
};
