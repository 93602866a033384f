package artifact

// The cloud drivers register the s3:// and azblob:// URL schemes that Open
// accepts.
import (
	_ "gocloud.dev/blob/azureblob"
	_ "gocloud.dev/blob/s3blob"
)
