//! The tc messages of Kata's `tcfilter` model: an ingress qdisc on an interface and, on it, a
//! match-everything u32 filter whose `mirred egress redirect` action hands every frame to the
//! other interface's egress — what `tc qdisc add dev A ingress` and `tc filter add dev A
//! parent ffff: prio 49152 protocol all u32 match u8 0 0 action mirred egress redirect dev B`
//! send. u32 rather than matchall: `cls_matchall` is missing from some kernels (this
//! machine's, for one), `cls_u32` is in every one Kata runs on.
//!
//! Owns: building those messages and reading redirect targets back from a filter dump.

use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionMirror, TcActionMirrorOption, TcActionOption,
    TcActionType, TcAttribute, TcFilterMatchAllOption, TcFilterU32, TcFilterU32Option, TcHandle,
    TcMessage, TcMirror, TcMirrorActionType, TcOption, TcU32Key, TcU32Selector, TcU32SelectorFlags,
};

/// The ingress qdisc's handle, `ffff:`; also the parent of the filters on it.
pub(super) const INGRESS_HANDLE: TcHandle = TcHandle {
    major: 0xffff,
    minor: 0,
};

/// The filter's priority: tc's default when none is given.
pub(super) const FILTER_PRIO: u16 = 0xc000;

/// `ETH_P_ALL`, in network byte order as `tcm_info`'s low half wants it.
const PROTOCOL_ALL: u16 = (libc::ETH_P_ALL as u16).to_be();

/// The ingress qdisc of interface `index`, for RTM_NEWQDISC / RTM_DELQDISC.
pub(super) fn ingress_qdisc(index: u32) -> TcMessage {
    let mut msg = TcMessage::with_index(index as i32);
    msg.header.handle = INGRESS_HANDLE;
    msg.header.parent = TcHandle::INGRESS;
    msg.attributes.push(TcAttribute::Kind("ingress".into()));
    msg
}

/// Whether a qdisc dump entry is the ingress qdisc of interface `index`.
pub(super) fn is_ingress_qdisc(msg: &TcMessage, index: u32) -> bool {
    msg.header.index == index as i32
        && msg.header.parent == TcHandle::INGRESS
        && msg
            .attributes
            .iter()
            .any(|a| matches!(a, TcAttribute::Kind(k) if k == "ingress"))
}

/// The filter on `from`'s ingress qdisc that redirects every frame to `to`'s egress.
pub(super) fn redirect_filter(from: u32, to: u32) -> TcMessage {
    let mut msg = TcMessage::with_index(from as i32);
    msg.header.parent = INGRESS_HANDLE;
    msg.header.info = (u32::from(FILTER_PRIO) << 16) | u32::from(PROTOCOL_ALL);

    // `match u8 0 0`: one key with a zero mask, which every packet matches.
    let mut sel = TcU32Selector::default();
    sel.flags = TcU32SelectorFlags::Terminal;
    sel.nkeys = 1;
    sel.keys = vec![TcU32Key::default()];

    let mut mirred = TcMirror::default();
    mirred.generic.action = TcActionType::Stolen;
    mirred.eaction = TcMirrorActionType::EgressRedir;
    mirred.ifindex = to;
    let mut action = TcAction::default();
    action.attributes = vec![
        TcActionAttribute::Kind(TcActionMirror::KIND.into()),
        TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(
            mirred,
        ))]),
    ];

    msg.attributes = vec![
        TcAttribute::Kind(TcFilterU32::KIND.into()),
        TcAttribute::Options(vec![
            TcOption::U32(TcFilterU32Option::Selector(sel)),
            TcOption::U32(TcFilterU32Option::Action(vec![action])),
        ]),
    ];
    msg
}

/// The interfaces a filter dump entry's mirred actions send frames to, and whether they
/// redirect (rather than mirror) them.
pub(super) fn redirect_targets(msg: &TcMessage) -> Vec<(u32, TcMirrorActionType)> {
    let mut out = Vec::new();
    for attr in &msg.attributes {
        let TcAttribute::Options(opts) = attr else {
            continue;
        };
        for opt in opts {
            let actions = match opt {
                TcOption::U32(TcFilterU32Option::Action(a))
                | TcOption::MatchAll(TcFilterMatchAllOption::Action(a)) => a,
                _ => continue,
            };
            for action in actions {
                for a in &action.attributes {
                    let TcActionAttribute::Options(aopts) = a else {
                        continue;
                    };
                    for ao in aopts {
                        if let TcActionOption::Mirror(TcActionMirrorOption::Parms(p)) = ao {
                            out.push((p.ifindex, p.eaction));
                        }
                    }
                }
            }
        }
    }
    out
}
