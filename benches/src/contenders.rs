//! The registry of contenders. The coordinator iterates it to plan runs and
//! every participant process looks its contender up in it by name.
//!
//! To add a contender (e.g. shmbus busy-poll / blocking / loan / copy, or an
//! optional iceoryx2 one behind a cargo feature), push it here; see
//! [`crate::transport`] for the trait.

use crate::baselines;
use crate::transport::Contender;

/// All contenders known to this build, in report order.
pub fn registry() -> Vec<Box<dyn Contender>> {
    let mut all = crate::shmbus::contenders();
    all.extend(crate::waiting::contenders());
    #[cfg(feature = "iceoryx2")]
    all.extend(crate::iceoryx2::contenders());
    all.extend(baselines::all());
    all
}

/// Looks a contender up by its exact name.
pub fn find(name: &str) -> Option<Box<dyn Contender>> {
    registry().into_iter().find(|c| c.name() == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_well_formed() {
        let reg = registry();
        let mut names: Vec<_> = reg.iter().map(|c| c.name()).collect();
        for n in &names {
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{n}"
            );
            assert!(find(n).is_some());
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), reg.len());
    }
}
