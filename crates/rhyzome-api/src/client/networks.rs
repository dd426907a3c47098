//! Network operations of the [`Client`]: create, list, show, remove, and the conditions of
//! emulated networks (link defaults, partitions).

use super::{percent_encode, Client, ClientError};
use crate::{
    LinkConditions, Network, NetworkConditions, NetworkCreate, NetworkLink, NetworkList,
    PartitionRequest,
};

fn network_path(name: &str) -> String {
    format!("/networks/{}", percent_encode(name))
}

impl Client {
    pub fn create_network(&self, req: &NetworkCreate) -> Result<Network, ClientError> {
        self.json(self.http.post(self.url("/networks")).json(req))
    }

    pub fn list_networks(&self) -> Result<Vec<Network>, ClientError> {
        let list: NetworkList = self.json(self.http.get(self.url("/networks")))?;
        Ok(list.networks)
    }

    pub fn get_network(&self, name: &str) -> Result<Network, ClientError> {
        self.json(self.http.get(self.url(&network_path(name))))
    }

    pub fn delete_network(&self, name: &str) -> Result<(), ClientError> {
        self.send(self.http.delete(self.url(&network_path(name))))?;
        Ok(())
    }

    /// Sets the default conditions of every NIC on an emulated network.
    pub fn set_network_link(
        &self,
        name: &str,
        conditions: &LinkConditions,
    ) -> Result<NetworkConditions, ClientError> {
        let body = NetworkLink {
            conditions: *conditions,
        };
        let path = format!("{}/link", network_path(name));
        self.json(self.http.put(self.url(&path)).json(&body))
    }

    /// Cuts an emulated network between the instances matching two label selectors.
    pub fn partition_network(
        &self,
        name: &str,
        a: &str,
        b: &str,
    ) -> Result<NetworkConditions, ClientError> {
        let body = PartitionRequest {
            between: [a.to_string(), b.to_string()],
        };
        let path = format!("{}/partitions", network_path(name));
        self.json(self.http.post(self.url(&path)).json(&body))
    }

    /// Removes every partition of an emulated network.
    pub fn heal_network(&self, name: &str) -> Result<NetworkConditions, ClientError> {
        let path = format!("{}/partitions", network_path(name));
        self.json(self.http.delete(self.url(&path)))
    }

    /// What applies now on an emulated network, per NIC and per partition.
    pub fn network_conditions(&self, name: &str) -> Result<NetworkConditions, ClientError> {
        let path = format!("{}/conditions", network_path(name));
        self.json(self.http.get(self.url(&path)))
    }
}
