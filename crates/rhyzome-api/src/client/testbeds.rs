//! Test-bed operations of the [`Client`]: apply, list, show, destroy.

use super::{percent_encode, Client, ClientError};
use crate::{Testbed, TestbedApply, TestbedList, TestbedPlan};

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

    pub fn delete_testbed(&self, name: &str) -> Result<(), ClientError> {
        self.send(self.http.delete(self.url(&testbed_path(name))))?;
        Ok(())
    }
}
