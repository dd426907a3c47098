//! Test-bed operations of the [`Client`]: apply, list, show, scale, fault, destroy.

use super::{percent_encode, Client, ClientError};
use crate::{
    Testbed, TestbedApply, TestbedFault, TestbedFaultResult, TestbedList, TestbedPlan, TestbedScale,
};

fn testbed_path(name: &str) -> String {
    format!("/testbeds/{}", percent_encode(name))
}

impl Client {
    pub fn apply_testbed(&self, req: &TestbedApply) -> Result<TestbedPlan, ClientError> {
        self.json(self.http.post(self.url("/testbeds")).json(req))
    }

    pub fn list_testbeds(&self) -> Result<Vec<Testbed>, ClientError> {
        let list: TestbedList = self.json(self.http.get(self.url("/testbeds")))?;
        Ok(list.testbeds)
    }

    pub fn get_testbed(&self, name: &str) -> Result<Testbed, ClientError> {
        self.json(self.http.get(self.url(&testbed_path(name))))
    }

    pub fn scale_testbed(
        &self,
        name: &str,
        req: &TestbedScale,
    ) -> Result<TestbedPlan, ClientError> {
        let path = format!("{}/scale", testbed_path(name));
        self.json(self.http.post(self.url(&path)).json(req))
    }

    pub fn testbed_fault(
        &self,
        name: &str,
        req: &TestbedFault,
    ) -> Result<TestbedFaultResult, ClientError> {
        let path = format!("{}/faults", testbed_path(name));
        self.json(self.http.post(self.url(&path)).json(req))
    }

    pub fn delete_testbed(&self, name: &str) -> Result<(), ClientError> {
        self.send(self.http.delete(self.url(&testbed_path(name))))?;
        Ok(())
    }
}
