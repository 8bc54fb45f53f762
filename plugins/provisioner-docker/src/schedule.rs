//! Where units go and which go first: pure policy, no engine calls.

/// A node as the scheduler sees it: its address, whether it takes new
/// units, and the units already on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLoad {
    pub address: String,
    pub ready: bool,
    /// Units of the same app and process.
    pub same_process: usize,
    /// Units of the same app (any process).
    pub same_app: usize,
    /// Every unit of this provisioner on the node.
    pub total: usize,
}

/// Picks the node of a new unit: spread by app and process first, then by
/// app, then by the node's whole load; nodes that are not ready are never
/// picked. `None` when no node is ready.
pub fn pick(nodes: &[NodeLoad]) -> Option<usize> {
    nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.ready)
        .min_by(|(_, a), (_, b)| {
            (a.same_process, a.same_app, a.total, &a.address).cmp(&(b.same_process, b.same_app, b.total, &b.address))
        })
        .map(|(i, _)| i)
}

/// Picks the node a surplus unit is taken from: a node that is not ready
/// first, then the one with the most units of the process.
pub fn pick_surplus(nodes: &[NodeLoad]) -> Option<usize> {
    nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.same_process > 0)
        .max_by(|(_, a), (_, b)| (!a.ready, a.same_process, a.same_app, &b.address).cmp(&(!b.ready, b.same_process, b.same_app, &a.address)))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(address: &str, ready: bool, same_process: usize, same_app: usize, total: usize) -> NodeLoad {
        NodeLoad { address: address.into(), ready, same_process, same_app, total }
    }

    #[test]
    fn spreads_by_process_then_app_then_load() {
        let nodes = vec![load("a", true, 1, 1, 1), load("b", true, 0, 2, 5), load("c", true, 0, 2, 3)];
        assert_eq!(pick(&nodes), Some(2));
        let nodes = vec![load("a", true, 1, 1, 1), load("b", true, 1, 3, 3)];
        assert_eq!(pick(&nodes), Some(0));
        let nodes = vec![load("a", true, 0, 0, 0), load("b", true, 0, 0, 0)];
        assert_eq!(pick(&nodes), Some(0), "ties go to the first address");
    }

    #[test]
    fn never_picks_a_node_that_is_not_ready() {
        let nodes = vec![load("a", false, 0, 0, 0), load("b", true, 9, 9, 9)];
        assert_eq!(pick(&nodes), Some(1));
        assert_eq!(pick(&[load("a", false, 0, 0, 0)]), None);
        assert_eq!(pick(&[]), None);
    }

    #[test]
    fn surplus_leaves_disabled_then_crowded_nodes() {
        let nodes = vec![load("a", true, 3, 3, 3), load("b", false, 1, 1, 1)];
        assert_eq!(pick_surplus(&nodes), Some(1));
        let nodes = vec![load("a", true, 1, 1, 1), load("b", true, 2, 2, 2), load("c", true, 0, 0, 0)];
        assert_eq!(pick_surplus(&nodes), Some(1));
        assert_eq!(pick_surplus(&[load("a", true, 0, 0, 0)]), None);
    }
}
