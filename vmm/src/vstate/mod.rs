//! The only users of KVM: the VM ([`vm`]), its vCPUs ([`vcpu`]) and the register and CPUID values
//! they are given ([`regs`], [`cpuid`]).

pub mod cpuid;
pub mod regs;
pub mod vcpu;
pub mod vm;
