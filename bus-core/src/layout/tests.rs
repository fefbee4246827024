use super::*;

pub(crate) fn geometry(capacity: u32, slot_size: u32, mode: Mode) -> Geometry {
    Geometry {
        capacity,
        slot_size,
        mode,
        max_publishers: 4,
        max_subscribers: 8,
        type_info: TypeInfo::bytes(),
    }
}

#[test]
fn layout_regions_do_not_overlap_and_slots_are_page_aligned() {
    let l = Layout::compute(&geometry(64, 64, Mode::Lossless)).unwrap();
    assert!(CONTROL_OFFSET + CONTROL_LEN <= l.publishers_offset);
    assert_eq!(l.subscribers_offset, l.publishers_offset + 4 * ENTRY_LEN);
    assert!(l.subscribers_offset + 8 * ENTRY_LEN <= l.slots_offset);
    assert_eq!(l.slots_offset % SEGMENT_PAGE, 0);
    assert_eq!(l.slot_stride, 128);
    assert_eq!(l.total_len, l.slots_offset + 64 * 128);
}

#[test]
fn header_round_trips_through_validation() {
    let l = Layout::compute(&geometry(1024, 4000, Mode::Lossy)).unwrap();
    let h = l.header();
    let bytes = h.as_bytes().to_vec();
    let back = SegmentHeader::read_from(&bytes).unwrap();
    assert_eq!(back.validate(l.total_len).unwrap(), l);
}

#[test]
fn geometry_rejects_non_power_of_two_capacity() {
    assert_eq!(
        Layout::compute(&geometry(100, 64, Mode::Lossless)),
        Err(LayoutError::Capacity(100))
    );
}

#[test]
fn geometry_rejects_type_larger_than_slot() {
    let mut g = geometry(8, 8, Mode::Lossless);
    g.type_info = TypeInfo {
        name: "Big".into(),
        size: 16,
        align: 8,
    };
    assert!(matches!(Layout::compute(&g), Err(LayoutError::Type { .. })));
}

#[test]
fn validation_rejects_every_corrupted_field() {
    let l = Layout::compute(&geometry(16, 64, Mode::Lossless)).unwrap();
    let good = l.header();
    let len = l.total_len;
    let mut cases: Vec<(&str, SegmentHeader)> = Vec::new();
    let mut h = good.clone();
    h.magic[0] ^= 1;
    cases.push(("magic", h));
    let mut h = good.clone();
    h.layout_version += 1;
    cases.push(("version", h));
    let mut h = good.clone();
    h.mode = 7;
    cases.push(("mode", h));
    let mut h = good.clone();
    h.capacity = 17;
    cases.push(("capacity", h));
    let mut h = good.clone();
    h.capacity = 1 << 31;
    cases.push(("capacity huge", h));
    let mut h = good.clone();
    h.slot_size = 0;
    cases.push(("slot_size", h));
    let mut h = good.clone();
    h.slot_size = 128;
    cases.push(("slot_size inconsistent", h));
    let mut h = good.clone();
    h.slot_stride = 8;
    cases.push(("stride", h));
    let mut h = good.clone();
    h.max_subscribers = 0;
    cases.push(("max_subscribers", h));
    let mut h = good.clone();
    h.max_publishers = 9;
    cases.push(("max_publishers inconsistent", h));
    let mut h = good.clone();
    h.slots_offset = 0;
    cases.push(("slots_offset", h));
    let mut h = good.clone();
    h.publishers_offset += 8;
    cases.push(("publishers_offset", h));
    let mut h = good.clone();
    h.total_len = u64::MAX;
    cases.push(("total_len", h));
    let mut h = good.clone();
    h.type_name_len = 500;
    cases.push(("type_name_len", h));
    let mut h = good.clone();
    h.type_name[0] = 0;
    cases.push(("type_name bytes", h));
    let mut h = good.clone();
    h.type_align = 3;
    cases.push(("type_align", h));
    let mut h = good.clone();
    h.header_len = 12;
    cases.push(("header_len", h));
    for (what, h) in cases {
        assert!(h.validate(len).is_err(), "corrupted {what} was accepted");
    }
    assert!(matches!(
        good.validate(len - 1),
        Err(SegmentError::ShortMapping { .. })
    ));
    assert!(good.validate(len).is_ok());
}

#[test]
fn truncated_mapping_is_an_error() {
    assert_eq!(
        SegmentHeader::read_from(&[0u8; 10]).unwrap_err(),
        SegmentError::Truncated(10)
    );
}

proptest::proptest! {
    #[test]
    fn arbitrary_header_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 256..300), len in 0u64..(1u64 << 42)) {
        if let Ok(h) = SegmentHeader::read_from(&bytes) {
            if let Ok(l) = h.validate(len) {
                proptest::prop_assert!(l.total_len <= len);
                proptest::prop_assert!(l.slots_offset + l.slot_stride * u64::from(l.geometry.capacity) <= l.total_len);
            }
        }
    }
}
