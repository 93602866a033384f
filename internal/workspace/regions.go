package workspace

import "slices"

// Regions are the region names a workspace may be placed in or allow:
// "local" for a single machine, then the public regions of Azure and AWS,
// so residency policies can name where a team's data really lives.
var Regions = []string{
	"local",
	// Azure
	"australiaeast", "brazilsouth", "canadacentral", "canadaeast", "centralindia", "centralus",
	"eastasia", "eastus", "eastus2", "francecentral", "germanywestcentral", "italynorth",
	"japaneast", "japanwest", "koreacentral", "northcentralus", "northeurope", "norwayeast",
	"polandcentral", "qatarcentral", "southafricanorth", "southcentralus", "southeastasia",
	"southindia", "spaincentral", "swedencentral", "switzerlandnorth", "uaenorth", "uksouth",
	"ukwest", "westcentralus", "westeurope", "westus", "westus2", "westus3",
	// AWS
	"af-south-1", "ap-east-1", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3",
	"ap-south-1", "ap-south-2", "ap-southeast-1", "ap-southeast-2", "ap-southeast-3",
	"ap-southeast-4", "ca-central-1", "eu-central-1", "eu-central-2", "eu-north-1",
	"eu-south-1", "eu-south-2", "eu-west-1", "eu-west-2", "eu-west-3", "il-central-1",
	"me-central-1", "me-south-1", "sa-east-1", "us-east-1", "us-east-2", "us-west-1", "us-west-2",
}

// KnownRegion reports whether name is in Regions.
func KnownRegion(name string) bool { return slices.Contains(Regions, name) }
