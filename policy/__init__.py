"""The Pulumi policy pack run on every preview (`pulumi preview --policy-pack policy`); its rules are `policy.rules`."""
